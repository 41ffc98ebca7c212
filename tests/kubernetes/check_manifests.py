"""The Kubernetes manifests in server/examples/kubernetes (docs/deployment.md):
each one matches the Kubernetes API schema (manifest_schema.py), every flag
the StatefulSet passes is one that `sandpoold --help` lists, the probes and
ports reach the listeners those flags open, and every replica the
autoscaler may start has a tenants file. Each check is also shown to fail
on a manifest broken on purpose.

    check_manifests.py MANIFEST_DIR SANDPOOLD
"""

import copy
import pathlib
import re
import subprocess
import sys
import unittest

import yaml

from manifest_schema import SchemaError, check_document

MANIFEST_DIR = None
SANDPOOLD = None


class ManifestError(Exception):
    pass


def load_manifests(directory):
    documents = []
    for path in sorted(pathlib.Path(directory).glob("*.yaml")):
        with open(path, encoding="utf-8") as f:
            documents.extend(doc for doc in yaml.safe_load_all(f) if doc is not None)
    return documents


def find(documents, kind):
    found = [d for d in documents if d["kind"] == kind]
    if len(found) != 1:
        raise ManifestError(f"expected one {kind}, found {len(found)}")
    return found[0]


def named(documents, kind, name):
    for document in documents:
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise ManifestError(f"no {kind} named {name}")


def server_container(documents):
    containers = find(documents, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "sandpoold")


def flag_values(container):
    """--name=value arguments as {name: value}; anything else is an error."""
    flags = {}
    for arg in container.get("args", []):
        match = re.fullmatch(r"--([a-z0-9-]+)=(.*)", arg)
        if not match:
            raise ManifestError(f"argument '{arg}' is not --flag=value")
        flags[match.group(1)] = match.group(2)
    return flags


def sandpoold_flags(sandpoold):
    help_text = subprocess.run([sandpoold, "--help"], check=True, capture_output=True,
                               text=True, timeout=60).stdout
    # Boost lists each option at the start of a line, two spaces in; the
    # descriptions' continuation lines are indented further.
    return set(re.findall(r"^  (?:-\w \[ )?--([a-z0-9-]+)", help_text, re.MULTILINE))


def check_flags(documents, known_flags):
    for name in flag_values(server_container(documents)):
        if name not in known_flags:
            raise ManifestError(f"sandpoold has no flag --{name}")


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def container_port(container, name_or_number):
    if isinstance(name_or_number, int):
        return name_or_number
    for port in container.get("ports", []):
        if port.get("name") == name_or_number:
            return port["containerPort"]
    raise ManifestError(f"container {container['name']} has no port named '{name_or_number}'")


def check_probes_and_ports(documents):
    statefulset = find(documents, "StatefulSet")
    pod = statefulset["spec"]["template"]
    container = server_container(documents)
    flags = flag_values(container)
    metrics_port = port_of(flags["listen-metrics"])
    rpc_port = port_of(flags["listen-tcp"])
    expected_paths = {"startupProbe": "/healthz", "livenessProbe": "/healthz",
                      "readinessProbe": "/readyz"}
    for probe, path in expected_paths.items():
        action = container[probe]["httpGet"]
        if action["path"] != path:
            raise ManifestError(f"{probe} asks {action['path']}, sandpoold serves {path}")
        if container_port(container, action["port"]) != metrics_port:
            raise ManifestError(f"{probe} asks port {action['port']}, --listen-metrics is "
                                f"{flags['listen-metrics']}")
    annotations = pod["metadata"].get("annotations", {})
    if int(annotations.get("prometheus.io/port", -1)) != metrics_port:
        raise ManifestError("prometheus.io/port does not name the --listen-metrics port")
    if annotations.get("prometheus.io/path") != "/metrics":
        raise ManifestError("prometheus.io/path is not /metrics")
    if container_port(container, "rpc") != rpc_port:
        raise ManifestError("the rpc port is not the --listen-tcp port")
    service = find(documents, "Service")
    if statefulset["spec"]["serviceName"] != service["metadata"]["name"]:
        raise ManifestError("the StatefulSet's serviceName is not the headless Service")
    if service["spec"].get("clusterIP") != "None":
        raise ManifestError("the Service is not headless (clusterIP: None)")
    for port in service["spec"]["ports"]:
        container_port(container, port["targetPort"])
    grace_s = int(flags.get("shutdown-grace-ms", 10000)) / 1000
    if pod["spec"]["terminationGracePeriodSeconds"] <= grace_s:
        raise ManifestError("terminationGracePeriodSeconds does not exceed --shutdown-grace-ms")


def check_placement(documents):
    """Every replica the autoscaler may start has a tenants file, and every
    tenant in the shard table is in the file of the shard it names."""
    statefulset = find(documents, "StatefulSet")
    name = statefulset["metadata"]["name"]
    files = named(documents, "Secret", "sandpool-tenants")["stringData"]
    flags = flag_values(server_container(documents))
    if flags["tenants"] != "/etc/sandpool/tenants/$(POD_NAME).conf":
        raise ManifestError("--tenants does not name the pod's own tenants file")
    replicas = find(documents, "HorizontalPodAutoscaler")["spec"]["maxReplicas"]
    for ordinal in range(replicas):
        if f"{name}-{ordinal}.conf" not in files:
            raise ManifestError(f"replica {name}-{ordinal} has no tenants file")
    table = named(documents, "ConfigMap", "sandpool-shards")["data"]["shards.conf"]
    for line in table.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tenant, address = (part.strip() for part in line.split("=", 1))
        replica = address.split(".", 1)[0]
        if f"[{tenant}]" not in files.get(f"{replica}.conf", "").splitlines():
            raise ManifestError(f"tenant {tenant} is placed on {replica}, whose tenants file "
                                f"does not hold it")


class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.documents = load_manifests(MANIFEST_DIR)
        cls.known_flags = sandpoold_flags(SANDPOOLD)

    def mutated(self, change):
        documents = copy.deepcopy(self.documents)
        change(documents)
        return documents

    def statefulset(self, documents):
        return find(documents, "StatefulSet")

    def test_every_manifest_matches_the_schema(self):
        kinds = set()
        for document in self.documents:
            check_document(document)
            kinds.add(document["kind"])
        self.assertTrue({"StatefulSet", "Service", "Secret", "ConfigMap",
                         "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds, kinds)

    def test_help_lists_the_flags_it_parses(self):
        self.assertIn("tenants", self.known_flags)
        self.assertIn("shutdown-grace-ms", self.known_flags)

    def test_container_flags_are_sandpoold_flags(self):
        check_flags(self.documents, self.known_flags)

    def test_probes_and_ports_reach_the_listeners(self):
        check_probes_and_ports(self.documents)

    def test_every_replica_has_its_tenants(self):
        check_placement(self.documents)

    def test_schema_refuses_a_misspelled_field(self):
        def change(docs):
            spec = self.statefulset(docs)["spec"]
            spec["replica"] = spec.pop("replicas")
        with self.assertRaisesRegex(SchemaError, r"unknown field 'replica' in V1StatefulSetSpec"):
            check_document(self.statefulset(self.mutated(change)))

    def test_schema_refuses_a_string_where_an_int_goes(self):
        def change(docs):
            self.statefulset(docs)["spec"]["template"]["spec"]["containers"][0]["ports"][0][
                "containerPort"] = "7300"
        with self.assertRaisesRegex(SchemaError, r"containers\[0\]\.ports\[0\]\.containerPort: "
                                                 r"expected int, got str"):
            check_document(self.statefulset(self.mutated(change)))

    def test_schema_refuses_a_bool_where_an_int_goes(self):
        def change(docs):
            self.statefulset(docs)["spec"]["replicas"] = True
        with self.assertRaisesRegex(SchemaError, r"spec\.replicas: expected int, got bool"):
            check_document(self.statefulset(self.mutated(change)))

    def test_schema_refuses_a_missing_required_field(self):
        def change(docs):
            del self.statefulset(docs)["spec"]["template"]["spec"]["containers"][0]["name"]
        with self.assertRaisesRegex(SchemaError, r"missing required field 'name' in V1Container"):
            check_document(self.statefulset(self.mutated(change)))

    def test_schema_refuses_an_unknown_kind(self):
        with self.assertRaisesRegex(SchemaError, r"unknown kind StatefulSett"):
            check_document({"apiVersion": "apps/v1", "kind": "StatefulSett",
                            "metadata": {"name": "x"}})

    def test_flag_check_refuses_an_unknown_flag(self):
        def change(docs):
            server_container(docs)["args"].append("--max-vm=4")
        with self.assertRaisesRegex(ManifestError, r"sandpoold has no flag --max-vm"):
            check_flags(self.mutated(change), self.known_flags)

    def test_probe_check_refuses_a_wrong_path(self):
        def change(docs):
            server_container(docs)["readinessProbe"]["httpGet"]["path"] = "/ready"
        with self.assertRaisesRegex(ManifestError, r"readinessProbe asks /ready"):
            check_probes_and_ports(self.mutated(change))

    def test_probe_check_refuses_a_wrong_port(self):
        def change(docs):
            server_container(docs)["livenessProbe"]["httpGet"]["port"] = 7300
        with self.assertRaisesRegex(ManifestError, r"livenessProbe asks port 7300"):
            check_probes_and_ports(self.mutated(change))

    def test_placement_check_refuses_a_tenant_on_the_wrong_shard(self):
        def change(docs):
            table = named(docs, "ConfigMap", "sandpool-shards")["data"]
            table["shards.conf"] = table["shards.conf"].replace("demo = sandpool-0",
                                                                "demo = sandpool-1")
        with self.assertRaisesRegex(ManifestError, r"tenant demo is placed on sandpool-1"):
            check_placement(self.mutated(change))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    MANIFEST_DIR, SANDPOOLD = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1], verbosity=2)
