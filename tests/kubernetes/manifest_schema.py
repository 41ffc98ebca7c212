"""Checks Kubernetes manifests against the Kubernetes API schema, as Debian's
python3-kubernetes carries it: every object model class lists its fields
(attribute_map, JSON name to Python name) and their types (openapi_types),
and its constructor refuses a missing required field. The check walks each
document against those classes: an unknown field, a value of the wrong type
or a missing required field is an error naming its path in the document.
"""

import re

import kubernetes.client as k8s

# The client in Debian 12 (for Kubernetes 1.22) predates autoscaling/v2,
# which Kubernetes 1.23 made out of autoscaling/v2beta2 without changing a
# field; v2beta2 is gone since 1.26, so the manifests say v2 and are checked
# against v2beta2's classes.
_VERSION_CLASSES = {"autoscaling/v2": "V2beta2"}

_PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float)}
_CONFIGURATION = k8s.Configuration()


class SchemaError(Exception):
    pass


def model_class(api_version, kind):
    """The model class of a top-level object, e.g. apps/v1 StatefulSet."""
    version = api_version.split("/")[-1]
    prefix = _VERSION_CLASSES.get(api_version, version[0].upper() + version[1:])
    cls = getattr(k8s, prefix + kind, None)
    if cls is None or not hasattr(cls, "openapi_types"):
        raise SchemaError(f"unknown kind {kind} in {api_version}")
    return cls


def _check_value(value, type_name, path):
    if type_name in _PRIMITIVES:
        # bool is an int in Python; the schema keeps them apart.
        if isinstance(value, bool) and type_name != "bool":
            raise SchemaError(f"{path}: expected {type_name}, got bool {value!r}")
        if not isinstance(value, _PRIMITIVES[type_name]):
            raise SchemaError(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return
    if type_name == "object":
        # int-or-string (ports, maxUnavailable) and free-form values.
        return
    if type_name == "datetime":
        raise SchemaError(f"{path}: a timestamp is set by the server, not by a manifest")
    match = re.fullmatch(r"list\[(.+)\]", type_name)
    if match:
        if not isinstance(value, list):
            raise SchemaError(f"{path}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            _check_value(item, match.group(1), f"{path}[{i}]")
        return
    match = re.fullmatch(r"dict\(str, (.+)\)", type_name)
    if match:
        if not isinstance(value, dict):
            raise SchemaError(f"{path}: expected a map, got {type(value).__name__}")
        for key, item in value.items():
            _check_value(item, match.group(1), f"{path}.{key}")
        return
    check_object(value, getattr(k8s, type_name), path)


def check_object(document, cls, path):
    if not isinstance(document, dict):
        raise SchemaError(f"{path}: expected an object ({cls.__name__}), got {type(document).__name__}")
    python_names = {json: python for python, json in cls.attribute_map.items()}
    for key, value in document.items():
        if key not in python_names:
            raise SchemaError(f"{path}: unknown field '{key}' in {cls.__name__}")
        if value is not None:
            _check_value(value, cls.openapi_types[python_names[key]], f"{path}.{key}")
    # The generated constructor calls the setter of every required field,
    # which refuses None: give it the fields present, and only those.
    present = {python_names[key]: True for key, value in document.items() if value is not None}
    try:
        cls(local_vars_configuration=_CONFIGURATION, **present)
    except ValueError as e:
        missing = re.search(r"`(\w+)`", str(e))
        field = cls.attribute_map.get(missing.group(1), missing.group(1)) if missing else str(e)
        raise SchemaError(f"{path}: missing required field '{field}' in {cls.__name__}") from None


def check_document(document):
    """Checks one parsed manifest; raises SchemaError naming the path."""
    if not isinstance(document, dict):
        raise SchemaError("a manifest must be an object")
    for field in ("apiVersion", "kind", "metadata"):
        if field not in document:
            raise SchemaError(f"missing required field '{field}'")
    cls = model_class(document["apiVersion"], document["kind"])
    name = document["metadata"].get("name", "?") if isinstance(document["metadata"], dict) else "?"
    check_object(document, cls, f"{document['kind']}/{name}")
