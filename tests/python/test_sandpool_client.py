"""End-to-end tests of clients/python/sandpool_client.py against a real
sandpoold (see conftest.py): the command line as a user runs it, and the
async API with host functions served from Python."""
from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

capnp = pytest.importorskip("capnp", reason="pycapnp not installed: Python client tests skipped")

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "python"
sys.path.insert(0, str(CLIENT_DIR))
import sandpool_client as sp  # noqa: E402  (found through the line above)

T = TypeVar("T")


@pytest.fixture(scope="module")
def guests(server, guest_file) -> None:
    """The example and test guests, uploaded once for the tests that call them."""

    async def upload(tenant: sp.Tenant) -> None:
        for name in ("hello", "add", "echo", "probe"):
            await tenant.upload(name, guest_file(name).read_bytes(), replace=True)

    as_tenant(server, upload)


def as_tenant(server, body: Callable[[sp.Tenant], Awaitable[T]]) -> T:
    """Runs `body` with the test tenant on a fresh connection."""

    async def main() -> T:
        async with await sp.connect(server.tcp) as conn:
            return await body(await conn.login(server.token))

    return sp.run(main())


# --- the command line ----------------------------------------------------

def test_version_names_server_and_protocol(cli) -> None:
    r = cli("version", token=None)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"sandpoold \S+ \(protocol 1; this client speaks 1\)\n", r.stdout)


def test_info_prints_the_tenant_and_its_quota(cli) -> None:
    r = cli("info")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("tenant acme: max_vms=32 max_guests=20 max_memory_mib=2048 max_concurrent_calls=48 "
                        "queue_length=200\n")


def test_upload_prints_exports_and_list_shows_them(cli, guest_file) -> None:
    r = cli("upload", "cli-add", str(guest_file("add")), "--replace")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("uploaded cli-add (")
    assert "  add(i32, i32) -> i32\n" in r.stdout

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^cli-add  \d+ bytes  sha256 [0-9a-f]{64}  min_warm=\d+ max_vms=\d+\n  add\(i32, i32\) -> i32$",
                     listed.stdout, re.MULTILINE)


def test_upload_over_an_existing_guest_needs_replace(cli, guest_file) -> None:
    assert cli("upload", "twice", str(guest_file("echo")), "--replace").returncode == 0
    again = cli("upload", "twice", str(guest_file("echo")))
    assert again.returncode == 1
    assert "guestExists" in again.stderr
    assert cli("upload", "twice", str(guest_file("echo")), "--replace").returncode == 0


@pytest.mark.parametrize(("function", "args", "printed"), [
    ("add", ["2", "40"], "42"),
    ("add", ["-5", "0x10"], "11"),
    ("add_u64", ["18446744073709551614", "1"], "18446744073709551615"),
    ("add_f64", ["2.5", "40"], "42.5"),
    ("both", ["true", "0"], "false"),
])
def test_call_parses_arguments_by_the_signature(cli, guests, function: str, args: list[str], printed: str) -> None:
    r = cli("call", "add", function, *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout == printed + "\n"


def test_call_prints_guest_output_then_the_value(cli, guests) -> None:
    r = cli("call", "hello", "hello", "world")
    assert r.returncode == 0, r.stderr
    assert r.stdout == 'hello from the guest, world!\n"Hello, world!"\n'


def test_call_timing_goes_to_stderr(cli, guests) -> None:
    r = cli("call", "echo", "nothing", "--timing")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "(void)\n"
    assert re.match(r"timing: queue=[\d.]+us run=[\d.]+us reset=[\d.]+us total=[\d.]+us host_calls=0 ", r.stderr)


def test_call_bytes_travel_as_hex(cli, guests) -> None:
    r = cli("call", "echo", "echo_bytes", "0x00ff10")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "0x00ff10\n"


def test_call_over_a_unix_socket(cli, server, guests) -> None:
    r = cli("call", "echo", "echo", "via unix", connect=server.unix)
    assert r.returncode == 0, r.stderr
    assert r.stdout == '"via unix"\n'


def test_argument_not_of_the_parameter_type_is_a_usage_error(cli, guests) -> None:
    r = cli("call", "add", "add", "2", "99999999999")
    assert r.returncode == 2
    assert "'99999999999' is not a valid i32" in r.stderr


def test_unknown_function_exits_1_with_the_error_code(cli, guests) -> None:
    r = cli("call", "add", "subtract", "1", "2")
    assert r.returncode == 1
    assert r.stderr.startswith("error: unknownFunction: ")


def test_kv_host_function_served_from_the_command_line(cli, guests) -> None:
    r = cli("call", "probe", "call_host", "kv_get", "colour", "--kv", "colour=blue", "--kv", "size=9")
    assert r.returncode == 0, r.stderr
    assert r.stdout == '"blue"\n'


def test_missing_key_reaches_the_guest_as_a_failed_host_call(cli, guests) -> None:
    r = cli("call", "probe", "call_host", "kv_get", "shape", "--kv", "colour=blue")
    assert r.returncode == 1
    assert r.stderr.startswith("error: guestAbort: ")
    assert "no key 'shape'" in r.stderr


def test_removed_guest_is_unknown(cli, guest_file) -> None:
    assert cli("upload", "short-lived", str(guest_file("echo")), "--replace").returncode == 0
    removed = cli("remove", "short-lived")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == "removed short-lived\n"
    r = cli("call", "short-lived", "nothing")
    assert r.returncode == 1
    assert "unknownGuest" in r.stderr


def test_stats_count_the_calls_of_a_guest(cli, guest_file) -> None:
    assert cli("upload", "counted", str(guest_file("echo")), "--replace").returncode == 0
    for _ in range(3):
        assert cli("call", "counted", "nothing").returncode == 0
    r = cli("stats")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^counted warm=\d+ busy=0 waiting=0 created=\d+ reset=\d+ discarded=\d+ calls=3 failed=0 ",
                     r.stdout, re.MULTILINE)


def test_configure_changes_a_guest_pool(cli, guest_file) -> None:
    assert cli("upload", "configured", str(guest_file("echo")), "--replace").returncode == 0
    r = cli("configure", "configured", "--min-warm", "0", "--max-vms", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "configured min_warm=0 max_vms=2\n"
    assert re.search(r"^configured .*min_warm=0 max_vms=2$", cli("list").stdout, re.MULTILINE)
    refused = cli("configure", "configured", "--min-warm", "3", "--max-vms", "2")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: invalidArgument: ")


def test_bench_reports_percentiles_and_rate(cli, guests) -> None:
    r = cli("bench", "echo", "echo", "x", "--calls", "200", "--warmup", "20", "--concurrency", "4")
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(r"bench echo.echo concurrency=4 calls=200 errors=0 p50_us=([\d.]+) p99_us=([\d.]+) "
                     r"calls_per_s=(\d+)\n", r.stdout)
    assert m, r.stdout
    p50, p99, rate = float(m[1]), float(m[2]), int(m[3])
    assert 0 < p50 <= p99
    assert rate > 0


def test_bench_of_a_failing_call_exits_1(cli, guests) -> None:
    r = cli("bench", "probe", "call_host", "kv_get", "absent", "--kv", "present=1", "--calls", "5", "--warmup", "2")
    assert r.returncode == 1
    assert "no key 'absent'" in r.stderr


def test_bench_ping(cli) -> None:
    r = cli("bench", "ping", "--calls", "100", "--warmup", "10", token=None)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"bench ping concurrency=1 calls=100 errors=0 p50_us=[\d.]+ p99_us=[\d.]+ "
                        r"calls_per_s=\d+\n", r.stdout)


def test_unknown_token_exits_1(cli) -> None:
    r = cli("list", token="not-a-token-of-anyone")
    assert r.returncode == 1
    assert r.stderr.startswith("error: unauthenticated: ")


def test_missing_token_is_a_usage_error(cli) -> None:
    r = cli("list", token=None)
    assert r.returncode == 2
    assert "needs --token or $SANDPOOL_TOKEN" in r.stderr


def test_nothing_listening_exits_3(cli) -> None:
    # A bound socket that does not listen: connections to it are refused.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        r = cli("list", connect=f"127.0.0.1:{s.getsockname()[1]}")
    assert r.returncode == 3
    assert "cannot connect to 127.0.0.1:" in r.stderr


def test_schema_flag_names_a_copy_elsewhere(cli, tmp_path: Path) -> None:
    copy = tmp_path / "sandpool.capnp"
    copy.write_bytes((CLIENT_DIR.parents[1] / "rpc-schema" / "sandpool.capnp").read_bytes())
    r = cli("--schema", str(copy), "version", token=None)
    assert r.returncode == 0, r.stderr
    assert "(protocol 1; this client speaks 1)" in r.stdout


def test_schema_comes_from_the_environment_when_set(cli) -> None:
    r = cli("version", token=None, env={"SANDPOOL_SCHEMA": "no-such-dir/sandpool.capnp"})
    assert r.returncode == 2
    assert "schema no-such-dir/sandpool.capnp not found" in r.stderr


# --- the async API and host functions served from Python -----------------

def test_python_host_function_answers_the_guest(server, guests) -> None:
    inventory = {"apples": "12"}
    asked: list[str] = []

    async def kv_get(key: str) -> str:
        asked.append(key)
        return inventory[key]

    ok = as_tenant(server, lambda t: t.call("probe", "call_host", ["kv_get", "apples"],
                                            host_functions={"kv_get": kv_get}))
    assert ok.value == "12"
    assert asked == ["apples"]
    assert ok.timing.host_calls == 1


def test_exception_in_a_host_function_fails_the_call_with_its_message(server, guests) -> None:
    async def kv_get(key: str) -> str:
        raise LookupError(f"{key} is out of stock")

    with pytest.raises(sp.CallFailed) as failed:
        as_tenant(server, lambda t: t.call("probe", "call_host", ["kv_get", "pears"],
                                           host_functions={"kv_get": kv_get}))
    assert failed.value.code == "guestAbort"
    assert "pears is out of stock" in failed.value.message


def test_host_function_not_lent_is_refused(server, guests) -> None:
    async def kv_get(key: str) -> str:
        return key

    with pytest.raises(sp.CallFailed) as failed:
        as_tenant(server, lambda t: t.call("probe", "call_host", ["kv_put", "x"],
                                           host_functions={"kv_get": kv_get}))
    assert "this client provides no host function 'kv_put'" in failed.value.message


def test_concurrent_calls_each_reach_their_host_function(server, guests) -> None:
    async def body(tenant: sp.Tenant) -> list[Any]:
        async def call(i: int) -> Any:
            async def kv_get(key: str) -> str:
                return f"{key}-answered-by-{i}"
            ok = await tenant.call("probe", "call_host", ["kv_get", f"k{i}"], host_functions={"kv_get": kv_get})
            return ok.value
        return await asyncio.gather(*(call(i) for i in range(16)))

    assert as_tenant(server, body) == [f"k{i}-answered-by-{i}" for i in range(16)]


def test_call_timeout_covers_a_host_function_that_never_answers(server, guests) -> None:
    async def kv_get(key: str) -> str:
        await asyncio.Event().wait()  # nobody sets it: the server's deadline must end the call
        return key

    with pytest.raises(sp.CallFailed) as failed:
        as_tenant(server, lambda t: t.call("probe", "call_host", ["kv_get", "x"],
                                           host_functions={"kv_get": kv_get}, timeout_ms=300))
    assert failed.value.code == "timeout", failed.value


def test_upload_list_remove_through_the_api(server, guest_file) -> None:
    async def body(tenant: sp.Tenant) -> tuple[sp.GuestInfo, list[str], list[str]]:
        info = await tenant.upload("api-echo", guest_file("echo").read_bytes(), replace=True)
        before = [g.name for g in await tenant.list()]
        await tenant.remove("api-echo")
        after = [g.name for g in await tenant.list()]
        return info, before, after

    info, before, after = as_tenant(server, body)
    assert [str(s) for s in info.exports] == ["echo(string) -> string", "echo_bytes(bytes) -> bytes",
                                             "nothing() -> void"]
    assert "api-echo" in before
    assert "api-echo" not in after


def test_vm_settings_through_the_api(server, guest_file) -> None:
    async def body(tenant: sp.Tenant) -> tuple[sp.GuestInfo, sp.CallFailed, sp.GuestInfo]:
        info = await tenant.upload("api-vm", guest_file("echo").read_bytes(), replace=True,
                                   vm=sp.VmSettings(output_bytes=8 << 10))
        with pytest.raises(sp.CallFailed) as too_large:
            await tenant.call("api-vm", "echo_bytes", [bytes(16 << 10)])
        await tenant.configure("api-vm", vm=sp.VmSettings(max_host_calls=9))
        listed = next(g for g in await tenant.list() if g.name == "api-vm")
        await tenant.remove("api-vm")
        return info, too_large.value, listed

    info, too_large, listed = as_tenant(server, body)
    assert info.vm.output_bytes == 8 << 10
    assert info.vm.memory_bytes > 0 and info.vm.max_host_calls > 0, "the server sets every field"
    assert too_large.code == "limitExceeded"
    assert listed.vm == sp.VmSettings(info.vm.memory_bytes, info.vm.stack_bytes, info.vm.input_bytes,
                                      8 << 10, 9)


def test_cli_vm_options(cli, guest_file) -> None:
    r = cli("upload", "cli-vm", str(guest_file("echo")), "--replace", "--output-kib", "8")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^  vm: memory_mib=\d+ stack_kib=\d+ input_kib=\d+ output_kib=8 max_host_calls=\d+$",
                     r.stdout, re.MULTILINE)
    r = cli("configure", "cli-vm", "--max-host-calls", "9")
    assert r.returncode == 0, r.stderr
    assert re.search(r"output_kib=8 max_host_calls=9$", r.stdout, re.MULTILINE)
    refused = cli("configure", "cli-vm", "--stack-kib", "5")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: invalidArgument: ")


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--memory-mib", "-2", "argument --memory-mib: '-2' is not a non-negative integer"),
    ("--max-host-calls", "5000000000", "maxHostCalls 5000000000 is not a valid u32"),
    ("--memory-mib", str(2**50), f"memoryBytes {2**70} is not a valid u64"),
])
def test_cli_vm_option_its_field_cannot_hold_is_a_usage_error(cli, guest_file, option: str, value: str,
                                                               said: str) -> None:
    assert cli("upload", "cli-vm-range", str(guest_file("echo")), "--replace").returncode == 0
    before = cli("list").stdout
    r = cli("configure", "cli-vm-range", option, value)
    assert r.returncode == 2
    assert said in r.stderr
    assert cli("list").stdout == before, "nothing was sent"


def test_values_a_request_field_cannot_hold_raise_before_sending(server, guests) -> None:
    async def body(tenant: sp.Tenant) -> list[str]:
        refused = []
        for attempt in (lambda: tenant.configure("echo", vm=sp.VmSettings(stack_bytes=-4096)),
                        lambda: tenant.configure("echo", min_warm=-1, max_vms=2),
                        lambda: tenant.upload("echo", b"", replace=True, vm=sp.VmSettings(max_host_calls=2**32)),
                        lambda: tenant.call("echo", "nothing", timeout_ms=-1)):
            with pytest.raises(ValueError) as e:
                await attempt()
            refused.append(str(e.value))
        return refused

    assert as_tenant(server, body) == ["stackBytes -4096 is not a valid u64", "minWarm -1 is not a valid u32",
                                       "maxHostCalls 4294967296 is not a valid u32",
                                       "timeoutMs -1 is not a valid u32"]


def test_login_acts_for_the_token_s_tenant(server) -> None:
    name, quota = as_tenant(server, lambda t: t.info())
    assert name == "acme"
    assert quota == sp.Quota(max_vms=32, max_guests=20, max_memory_bytes=2048 << 20, max_concurrent_calls=48,
                             queue_length=200)


def test_removing_an_unknown_guest_raises_its_code(server) -> None:
    with pytest.raises(sp.SandpoolError) as failed:
        as_tenant(server, lambda t: t.remove("never-uploaded"))
    assert failed.value.code == "unknownGuest"


def test_values_out_of_range_are_refused_before_sending() -> None:
    value = sp.load_schema().Value.new_message()
    with pytest.raises(ValueError, match="is not a valid u32"):
        sp.encode_value(value, "u32", -1)
    with pytest.raises(ValueError, match="is not a valid i32"):
        sp.encode_value(value, "i32", 2**31)
    sp.encode_value(value, "i32", -(2**31))
    assert sp.decode_value(value) == -(2**31)


def test_typed_values_choose_the_wire_type() -> None:
    value = sp.load_schema().Value.new_message()
    seven = sp.Typed("u32", 7)
    sp.encode_value(value, sp.type_of(seven), seven)
    assert value.which() == "u32"
    assert sp.decode_value(value) == 7
    sp.encode_value(value, sp.type_of(7), 7)
    assert value.which() == "i64"


# --- the example ---------------------------------------------------------

def test_kv_lookup_example_serves_the_guest(server, guests) -> None:
    example = CLIENT_DIR / "examples" / "kv_lookup.py"
    r = subprocess.run([sys.executable, str(example), "--connect", server.tcp, "--token", server.token,
                        "probe", "call_host", "kv_get", "apples"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "call_host('kv_get', 'apples') = \"12\"\nserved 1 lookup(s): apples\n"


# --- Wasm modules (docs/wasm.md) -------------------------------------------

def test_a_wasm_module_uploads_and_answers_like_an_elf(server, guest_file) -> None:
    async def body(tenant: sp.Tenant) -> tuple[Any, Any]:
        await tenant.upload("py-greet", guest_file("greeting_wasm").read_bytes(), replace=True)
        return await tenant.call("py-greet", "greet", ["Python"]), await tenant.list()

    ok, guests = as_tenant(server, body)
    assert ok.value == "Hello, Python!"
    assert "greeting Python" in ok.output
    exports = {f.name: f for g in guests if g.name == "py-greet" for f in g.exports}
    assert "greet" in exports


def test_a_wasm_trap_is_a_typed_error(server, guest_file) -> None:
    async def body(tenant: sp.Tenant) -> Any:
        await tenant.upload("py-traps", guest_file("traps_wasm").read_bytes(), replace=True)
        return await tenant.call("py-traps", "unreachable")

    with pytest.raises(sp.CallFailed) as failed:
        as_tenant(server, body)
    assert failed.value.code == "guestAbort"
    assert "wasm trap: unreachable" in failed.value.message
