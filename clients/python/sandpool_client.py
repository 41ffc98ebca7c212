#!/usr/bin/env python3
"""sandpool_client: a command-line tool and a small async API for sandpoold.

It speaks the Cap'n Proto RPC protocol of rpc-schema/sandpool.capnp with
pycapnp 2.x in its asyncio style. See docs/python-client.md.

Command line:

    sandpool_client.py --connect 127.0.0.1:7300 --token TOKEN call hello hello world

Library (every coroutine must run inside pycapnp's KJ loop, hence `run`):

    import sandpool_client as sp

    async def main() -> None:
        async with await sp.connect("unix:/run/sandpoold.sock") as conn:
            tenant = await conn.login(token)
            ok = await tenant.call("probe", "call_host", ["kv_get", "colour"],
                                   host_functions={"kv_get": kv_get})
            print(ok.value)

    sp.run(main())

Host functions lent to a guest are `async def f(*args) -> value`; an
exception raised by one reaches the guest as a failed host call carrying
its message.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

try:
    import capnp
except ImportError as missing:
    if __name__ != "__main__":
        raise
    print(f"sandpool_client: pycapnp is not installed ({missing}); see docs/python-client.md", file=sys.stderr)
    sys.exit(2)  # the usage-error status (EXIT_USAGE below): nothing was attempted

SCHEMA_ENV = "SANDPOOL_SCHEMA"
DEFAULT_SCHEMA = Path(__file__).resolve().parent.parent.parent / "rpc-schema" / "sandpool.capnp"
DEFAULT_CONNECT = "127.0.0.1:7300"

# Exit statuses, the same as the C++ `sandpool` CLI's.
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3

INT_RANGES = {
    "i32": (-(2**31), 2**31 - 1),
    "i64": (-(2**63), 2**63 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
}

# A value as Python sees it: None (void), bool, int, float, str or bytes.
PyValue = Any
HostFunction = Callable[..., Awaitable[PyValue]]
T = TypeVar("T")


class SchemaError(Exception):
    """The schema file is missing or does not parse."""


class SandpoolError(Exception):
    """A typed error from sandpoold; `code` is an ErrorCode name of the schema."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class CallFailed(SandpoolError):
    """A call that failed in or around the guest, with what the guest printed."""

    def __init__(self, code: str, message: str, output: str, timing: Timing) -> None:
        super().__init__(code, message)
        self.output = output
        self.timing = timing


@dataclass(frozen=True)
class Typed:
    """A value with an explicit wire type, for when Python's type is not
    enough (an int is sent as i64 and a float as f64 unless wrapped)."""

    type: str
    value: PyValue


@dataclass(frozen=True)
class Signature:
    name: str
    params: list[str]
    result: str

    def __str__(self) -> str:
        return f"{self.name}({', '.join(self.params)}) -> {self.result}"


@dataclass(frozen=True)
class VmSettings:
    """One guest's VMs (docs/rpc.md, "VM settings"). Sizes in bytes. In a
    request 0 means unchanged (a new guest: the server's default); the
    server's answers set every field."""
    memory_bytes: int = 0
    stack_bytes: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    max_host_calls: int = 0

    def __str__(self) -> str:
        return (f"vm: memory_mib={self.memory_bytes >> 20} stack_kib={self.stack_bytes >> 10} "
                f"input_kib={self.input_bytes >> 10} output_kib={self.output_bytes >> 10} "
                f"max_host_calls={self.max_host_calls}")


@dataclass(frozen=True)
class GuestInfo:
    name: str
    sha256: str
    size: int
    exports: list[Signature]
    min_warm: int
    max_vms: int
    vm: VmSettings = VmSettings()


@dataclass(frozen=True)
class Quota:
    max_vms: int
    max_guests: int
    max_memory_bytes: int
    max_concurrent_calls: int
    queue_length: int


@dataclass(frozen=True)
class Timing:
    queue_ns: int
    run_ns: int
    reset_ns: int
    total_ns: int
    host_calls: int
    pages_restored: int
    cold_start: bool

    def __str__(self) -> str:
        return (f"timing: queue={self.queue_ns / 1000:.1f}us run={self.run_ns / 1000:.1f}us "
                f"reset={self.reset_ns / 1000:.1f}us total={self.total_ns / 1000:.1f}us "
                f"host_calls={self.host_calls} pages_restored={self.pages_restored} "
                f"cold={'yes' if self.cold_start else 'no'}")


@dataclass(frozen=True)
class CallOk:
    value: PyValue
    output: str
    output_truncated: bool
    timing: Timing


@dataclass(frozen=True)
class GuestStats:
    name: str
    warm: int
    busy: int
    waiting: int
    created: int
    reset: int
    discarded: int
    failed: int
    timeouts: int
    calls: int
    p50_us: int
    p99_us: int


@dataclass(frozen=True)
class TenantStats:
    queued: int
    running: int
    overloaded: int
    guests: list[GuestStats]


@dataclass(frozen=True)
class BenchResult:
    calls: int
    errors: int
    seconds: float
    latencies_ns: list[int]  # of the successful calls, sorted

    def percentile(self, p: float) -> float:
        """Latency in microseconds below which a fraction `p` of the calls fell."""
        if not self.latencies_ns:
            return 0.0
        index = min(max(math.ceil(p * len(self.latencies_ns)), 1), len(self.latencies_ns)) - 1
        return self.latencies_ns[index] / 1000

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0


# --- schema and values ---------------------------------------------------

@functools.cache
def load_schema(path: str | None = None) -> Any:
    """The schema module from `path`, else $SANDPOOL_SCHEMA, else the copy in
    this repository's rpc-schema/."""
    chosen = Path(path or os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA)
    if not chosen.is_file():
        raise SchemaError(f"schema {chosen} not found: pass --schema or set ${SCHEMA_ENV}")
    # The schema imports /capnp/c++.capnp: it lies under the system's include
    # directories, or in site-packages when pycapnp bundles libcapnp.
    imports = [d for d in ("/usr/local/include", "/usr/include", *sys.path) if d and os.path.isdir(d)]
    try:
        return capnp.load(str(chosen), imports=imports)
    except capnp.KjException as e:
        raise SchemaError(f"cannot load schema {chosen}: {e.description}") from None


def parse_value(type_name: str, text: str) -> PyValue:
    """A command-line argument read as `type_name`, as the C++ CLI reads it
    (integers in decimal or 0x hex, bool as true/false/1/0, bytes as hex)."""
    try:
        if type_name in INT_RANGES:
            value = int(text[2:], 16) if text.lower().startswith("0x") else int(text, 10)
            low, high = INT_RANGES[type_name]
            if not low <= value <= high:
                raise ValueError("out of range")
            return value
        if type_name in ("f32", "f64"):
            return float(text)
        if type_name == "bool":
            return {"true": True, "1": True, "false": False, "0": False}[text]
        if type_name == "bytes":
            return bytes.fromhex(text[2:] if text.startswith("0x") else text)
        if type_name == "void":
            return None
    except (ValueError, KeyError):
        raise ValueError(f"'{text}' is not a valid {type_name}") from None
    return text


def type_of(value: PyValue) -> str:
    """The wire type a Python value is sent as when no signature says otherwise."""
    if isinstance(value, Typed):
        return value.type
    if value is None:
        return "void"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "bool"
    if isinstance(value, int):
        return "i64"
    if isinstance(value, float):
        return "f64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    raise TypeError(f"no sandpool value type for a {type(value).__name__}")


def _fits(type_name: str, value: Any) -> bool:
    """Whether `value` is an int (not a bool) within the integer type `type_name`."""
    low, high = INT_RANGES[type_name]
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def encode_value(builder: Any, type_name: str, value: PyValue) -> None:
    """Sets the `Value` union `builder` to `value` as `type_name`, refusing
    what would not survive the trip (out of range, wrong kind)."""
    if isinstance(value, Typed):
        type_name, value = value.type, value.value
    if type_name == "void":
        builder.void = None
    elif type_name in INT_RANGES:
        if not _fits(type_name, value):
            raise ValueError(f"{value!r} is not a valid {type_name}")
        setattr(builder, type_name, value)
    elif type_name in ("f32", "f64") and isinstance(value, (int, float)) and not isinstance(value, bool):
        setattr(builder, type_name, float(value))
    elif type_name == "bool" and isinstance(value, bool):
        builder.bool = value
    elif type_name == "string" and isinstance(value, str):
        builder.string = value
    elif type_name == "bytes" and isinstance(value, (bytes, bytearray, memoryview)):
        builder.bytes = bytes(value)
    else:
        raise ValueError(f"{value!r} is not a valid {type_name}")


def decode_value(reader: Any) -> PyValue:
    kind = str(reader.which())
    if kind == "void":
        return None
    if kind == "bytes":
        return bytes(reader.bytes)  # some pycapnp releases hand out a memoryview
    return getattr(reader, kind)


def format_value(value: PyValue) -> str:
    """A value printed as the C++ CLI prints it."""
    if value is None:
        return "(void)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _signature(reader: Any) -> Signature:
    return Signature(reader.name, [str(t) for t in reader.params], str(reader.result))


def _vm_settings(reader: Any) -> VmSettings:
    return VmSettings(reader.memoryBytes, reader.stackBytes, reader.inputBytes, reader.outputBytes,
                      reader.maxHostCalls)


def _unsigned(field: str, type_name: str, value: int) -> int:
    """`value` for the request field `field` of type `type_name` (u32 or
    u64); ValueError, before anything is sent, for one it cannot hold (a
    negative number would otherwise surface as a transport exception)."""
    if not _fits(type_name, value):
        raise ValueError(f"{field} {value!r} is not a valid {type_name}")
    return value


def _vm_settings_request(vm: VmSettings) -> dict[str, int]:
    return {"memoryBytes": _unsigned("memoryBytes", "u64", vm.memory_bytes),
            "stackBytes": _unsigned("stackBytes", "u64", vm.stack_bytes),
            "inputBytes": _unsigned("inputBytes", "u64", vm.input_bytes),
            "outputBytes": _unsigned("outputBytes", "u64", vm.output_bytes),
            "maxHostCalls": _unsigned("maxHostCalls", "u32", vm.max_host_calls)}


def _guest_info(reader: Any) -> GuestInfo:
    return GuestInfo(reader.name, reader.sha256, reader.size, [_signature(s) for s in reader.exports],
                     reader.settings.minWarm, reader.settings.maxVms, _vm_settings(reader.vmSettings))


def _timing(reader: Any) -> Timing:
    return Timing(reader.queueNs, reader.runNs, reader.resetNs, reader.totalNs, reader.hostCalls,
                  reader.pagesRestored, reader.coldStart)


def _error(reader: Any) -> SandpoolError:
    return SandpoolError(str(reader.code), reader.message)


# --- host functions lent to the guest ------------------------------------

@functools.cache
def _host_functions_class(schema: Any) -> type:
    """A HostFunctions server class for `schema` (the base class only exists
    once the schema is loaded)."""

    class ServedHostFunctions(schema.HostFunctions.Server):
        def __init__(self, functions: Mapping[str, HostFunction]) -> None:
            self.functions = dict(functions)

        async def call(self, name: str, args: Any, _context: Any, **kwargs: Any) -> None:
            result = _context.results.result
            function = self.functions.get(name)
            if function is None:
                result.error = f"this client provides no host function '{name}'"
                return
            try:
                value = await function(*[decode_value(a) for a in args])
                encode_value(result.init("value"), type_of(value), value)
            except Exception as e:  # any failure is the guest's failed host call, not ours
                result.error = str(e) or type(e).__name__

    return ServedHostFunctions


# --- connection and tenant -----------------------------------------------

class Connection:
    """One RPC connection to sandpoold. Create with `connect`."""

    def __init__(self, schema: Any, stream: Any, client: Any) -> None:
        self.schema = schema
        self._stream = stream
        self._client = client
        self.sandpool = client.bootstrap().cast_as(schema.Sandpool)

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()
        self._stream.close()

    async def ping(self) -> None:
        await self.sandpool.ping()

    async def version(self) -> tuple[int, str]:
        """The server's protocol version and release."""
        r = await self.sandpool.version()
        return r.protocol, r.server

    async def login(self, token: str) -> Tenant:
        r = await self.sandpool.login(token)
        if r.result.which() == "error":
            raise _error(r.result.error)
        return Tenant(self.schema, r.result.tenant)


def parse_address(address: str) -> tuple[str, int] | str:
    """(host, port) for HOST:PORT or tcp:HOST:PORT, the path for unix:PATH."""
    if address.startswith("unix:"):
        return address[len("unix:"):]
    host, sep, port = address.removeprefix("tcp:").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address '{address}' is not HOST:PORT, tcp:HOST:PORT or unix:PATH")
    return host.strip("[]"), int(port)


async def connect(address: str, schema_path: str | None = None) -> Connection:
    """Connects to `address` (see parse_address). Raises OSError when
    nothing accepts there, SchemaError when the schema cannot be loaded."""
    schema = load_schema(schema_path)
    where = parse_address(address)
    if isinstance(where, str):
        stream = await capnp.AsyncIoStream.create_unix_connection(where)
    else:
        stream = await capnp.AsyncIoStream.create_connection(host=where[0], port=where[1])
    return Connection(schema, stream, capnp.TwoPartyClient(stream))


class Tenant:
    """What one logged-in tenant may do; every method acts on this tenant only."""

    def __init__(self, schema: Any, cap: Any) -> None:
        self.schema = schema
        self.cap = cap

    async def info(self) -> tuple[str, Quota]:
        """Who this capability acts for, and what it may use."""
        r = await self.cap.info()
        q = r.quota
        return r.name, Quota(q.maxVms, q.maxGuests, q.maxMemoryBytes, q.maxConcurrentCalls, q.queueLength)

    async def upload(self, name: str, elf: bytes, replace: bool = False,
                     vm: VmSettings | None = None) -> GuestInfo:
        """Uploads a guest; `vm` chooses its VMs (fields left 0: the replaced
        version's, or the server's defaults)."""
        request = self.cap.upload_request()
        request.name = name
        request.elf = elf
        request.replace = replace
        if vm is not None:
            request.vmSettings = _vm_settings_request(vm)
        r = await request.send()
        if r.result.which() == "error":
            raise _error(r.result.error)
        return _guest_info(r.result.guest)

    async def list(self) -> list[GuestInfo]:
        return [_guest_info(g) for g in (await self.cap.list()).guests]

    async def remove(self, name: str) -> None:
        r = await self.cap.remove(name)
        if r._has("error"):
            raise _error(r.error)

    async def signature(self, guest: str, function: str) -> Signature | None:
        """The export `function` of `guest`, or None if there is none."""
        for g in await self.list():
            if g.name == guest:
                return next((sig for sig in g.exports if sig.name == function), None)
        return None

    def call_request(self, guest: str, function: str, args: Sequence[PyValue],
                     param_types: Sequence[str] | None = None,
                     host_functions: Mapping[str, HostFunction] | Any = None,
                     timeout_ms: int = 0) -> Any:
        """A call request ready to send. Arguments are encoded as
        `param_types` (from the function's signature) where given, else by
        their Python type. `host_functions` is a mapping of async functions,
        or a HostFunctions server already built from one (to share it)."""
        request = self.cap.call_request()
        request.guest = guest
        request.function = function
        request.timeoutMs = _unsigned("timeoutMs", "u32", timeout_ms)
        encoded = request.init("args", len(args))
        for i, value in enumerate(args):
            declared = param_types[i] if param_types is not None and i < len(param_types) else None
            try:
                encode_value(encoded[i], declared or type_of(value), value)
            except (TypeError, ValueError) as e:
                raise ValueError(f"argument {i + 1}: {e}") from None
        if isinstance(host_functions, Mapping):
            host_functions = self.host_functions(host_functions)
        if host_functions is not None:
            request.hostFunctions = host_functions
        return request

    def host_functions(self, functions: Mapping[str, HostFunction]) -> Any:
        """A HostFunctions capability serving `functions` to the guest."""
        return _host_functions_class(self.schema)(functions)

    async def call(self, guest: str, function: str, args: Sequence[PyValue] = (),
                   host_functions: Mapping[str, HostFunction] | None = None,
                   timeout_ms: int = 0, typed_by_signature: bool = True) -> CallOk:
        """Calls `function` of `guest`. With `typed_by_signature`, arguments
        take the types of the function's signature (one list() first), so a
        plain int reaches an i32 parameter as an i32. Raises CallFailed
        when the call fails, ValueError for an argument its type refuses."""
        sig = await self.signature(guest, function) if typed_by_signature else None
        request = self.call_request(guest, function, args, sig.params if sig else None,
                                    host_functions, timeout_ms)
        return _call_outcome(await request.send())

    async def stats(self) -> TenantStats:
        s = (await self.cap.stats()).stats
        guests = [GuestStats(g.name, g.warm, g.busy, g.waiting, g.created, g.reset, g.discarded, g.failed,
                             g.timeouts, g.calls, g.latency.p50Us, g.latency.p99Us) for g in s.guests]
        return TenantStats(s.queued, s.running, s.overloaded, guests)

    async def configure(self, guest: str, min_warm: int | None = None, max_vms: int | None = None,
                        vm: VmSettings | None = None) -> tuple[int, int]:
        """Changes a guest's pool (both of `min_warm` and `max_vms`, or
        neither: unchanged) and its VMs (`vm`, fields left 0 unchanged;
        the guest boots again with them); returns the pool settings.
        list() shows the VM settings."""
        min_warm, max_vms, _ = await self._configure(guest, min_warm, max_vms, vm)
        return min_warm, max_vms

    async def _configure(self, guest: str, min_warm: int | None, max_vms: int | None,
                         vm: VmSettings | None) -> tuple[int, int, VmSettings]:
        """configure, also returning the VM settings the guest now runs
        with (ConfigureResult.vmSettings), as the command line prints them."""
        if (min_warm is None) != (max_vms is None):
            raise ValueError("configure takes both min_warm and max_vms, or neither")
        request = self.cap.configure_request()
        request.guest = guest
        if min_warm is not None:
            request.settings = {"minWarm": _unsigned("minWarm", "u32", min_warm),
                                "maxVms": _unsigned("maxVms", "u32", max_vms)}
        if vm is not None:
            request.vmSettings = _vm_settings_request(vm)
        r = await request.send()
        if r.result.which() == "error":
            raise _error(r.result.error)
        return r.result.settings.minWarm, r.result.settings.maxVms, _vm_settings(r.result.vmSettings)


def _call_outcome(response: Any) -> CallOk:
    result = response.result
    if result.which() == "error":
        e = result.error
        raise CallFailed(str(e.error.code), e.error.message, e.output, _timing(e.timing))
    ok = result.ok
    return CallOk(decode_value(ok.value), ok.output, ok.outputTruncated, _timing(ok.timing))


async def bench(op: Callable[[], Awaitable[bool]], calls: int, concurrency: int = 1) -> BenchResult:
    """Runs `op` `calls` times with `concurrency` in flight; `op` returns
    whether the call succeeded."""
    latencies: list[int] = []
    errors = 0
    started = 0

    async def worker() -> None:
        nonlocal errors, started
        while started < calls:
            started += 1
            begin = time.perf_counter_ns()
            if await op():
                latencies.append(time.perf_counter_ns() - begin)
            else:
                errors += 1

    begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return BenchResult(calls, errors, time.perf_counter() - begin, sorted(latencies))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Runs `coro` with pycapnp's KJ loop alongside asyncio's."""
    return asyncio.run(capnp.run(coro))


# --- command line --------------------------------------------------------

class UsageError(Exception):
    pass


def _kv_host_functions(pairs: Sequence[str]) -> dict[str, HostFunction]:
    """`kv_get(key :string) -> string` served from KEY=VALUE pairs, like the
    C++ CLI's --kv: the example of a host function a caller lends its guest."""
    table: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--kv needs KEY=VALUE, got '{pair}'")
        table[key] = value

    async def kv_get(key: str) -> str:
        if key not in table:
            raise LookupError(f"no key '{key}'")
        return table[key]

    return {"kv_get": kv_get} if table else {}


async def _typed_args(tenant: Tenant, a: argparse.Namespace) -> tuple[list[PyValue], list[str]]:
    """The command line's arguments parsed by the function's parameter types."""
    sig = await tenant.signature(a.guest, a.function)
    # Without a signature (unknown guest or function) the arguments travel as
    # strings and the server names the precise error.
    types = [sig.params[i] if sig and i < len(sig.params) else "string" for i in range(len(a.args))]
    try:
        return [parse_value(t, text) for t, text in zip(types, a.args)], types
    except ValueError as e:
        raise UsageError(str(e)) from None


def _print_bench(what: str, a: argparse.Namespace, r: BenchResult) -> None:
    print(f"bench {what} concurrency={a.concurrency} calls={r.calls} errors={r.errors} "
          f"p50_us={r.percentile(0.50):.1f} p99_us={r.percentile(0.99):.1f} calls_per_s={r.calls_per_s:.0f}")


async def _bench_call(tenant: Tenant, a: argparse.Namespace) -> None:
    values, types = await _typed_args(tenant, a)
    kv = _kv_host_functions(a.kv)
    # One host-functions object shared by every call, as a long-lived
    # client would hold it.
    host = tenant.host_functions(kv) if kv else None
    failure: CallFailed | None = None

    async def call() -> bool:
        nonlocal failure
        request = tenant.call_request(a.guest, a.function, values, types, host, a.timeout_ms)
        try:
            _call_outcome(await request.send())
            return True
        except CallFailed as e:
            failure = e
            return False

    warm = await bench(call, a.warmup, a.concurrency)
    if failure and warm.errors == warm.calls:
        raise failure
    result = await bench(call, a.calls, a.concurrency)
    _print_bench(f"{a.guest}.{a.function}", a, result)
    if failure and result.errors == result.calls:
        raise failure


def _vm_settings_of(a: argparse.Namespace) -> VmSettings | None:
    """The VM options given on the command line; None if none was."""
    vm = VmSettings(a.memory_mib << 20, a.stack_kib << 10, a.input_kib << 10, a.output_kib << 10,
                    a.max_host_calls)
    return None if vm == VmSettings() else vm


async def _command(a: argparse.Namespace) -> int:
    try:
        conn = await connect(a.connect, a.schema)
    except OSError as e:
        print(f"sandpool_client: cannot connect to {a.connect}: {os.strerror(e.errno) if e.errno else e}", file=sys.stderr)
        return EXIT_CONNECTION
    async with conn:
        if a.verb == "ping":
            begin = time.perf_counter()
            await conn.ping()
            print(f"pong from {a.connect} in {(time.perf_counter() - begin) * 1e6:.0f} us")
            return 0
        if a.verb == "version":
            protocol, server = await conn.version()
            print(f"{server} (protocol {protocol}; this client speaks {conn.schema.protocolVersion})")
            return 0
        if a.verb == "bench" and a.guest == "ping" and a.function is None:
            async def ping() -> bool:
                await conn.ping()
                return True
            await bench(ping, a.warmup, a.concurrency)
            _print_bench("ping", a, await bench(ping, a.calls, a.concurrency))
            return 0

        if not a.token:
            raise UsageError("this verb needs --token or $SANDPOOL_TOKEN")
        tenant = await conn.login(a.token)
        if a.verb == "info":
            name, q = await tenant.info()
            print(f"tenant {name}: max_vms={q.max_vms} max_guests={q.max_guests} "
                  f"max_memory_mib={q.max_memory_bytes >> 20} max_concurrent_calls={q.max_concurrent_calls} "
                  f"queue_length={q.queue_length}")
        elif a.verb == "upload":
            try:
                elf = Path(a.file).read_bytes()
            except OSError as e:
                raise UsageError(f"cannot read '{a.file}': {e.strerror}") from None
            g = await tenant.upload(a.name, elf, a.replace, _vm_settings_of(a))
            print(f"uploaded {g.name} ({g.size} bytes, sha256 {g.sha256})")
            for sig in g.exports:
                print(f"  {sig}")
            print(f"  {g.vm}")
        elif a.verb == "list":
            for g in await tenant.list():
                print(f"{g.name}  {g.size} bytes  sha256 {g.sha256}  min_warm={g.min_warm} max_vms={g.max_vms}")
                for sig in g.exports:
                    print(f"  {sig}")
                print(f"  {g.vm}")
        elif a.verb == "remove":
            await tenant.remove(a.name)
            print(f"removed {a.name}")
        elif a.verb == "call":
            values, types = await _typed_args(tenant, a)
            request = tenant.call_request(a.guest, a.function, values, types, _kv_host_functions(a.kv) or None,
                                          a.timeout_ms)
            try:
                ok = _call_outcome(await request.send())
            except CallFailed as e:
                sys.stdout.write(e.output)
                if a.timing:
                    print(e.timing, file=sys.stderr)
                raise
            sys.stdout.write(ok.output)
            if ok.output_truncated:
                print("[output truncated]")
            print(format_value(ok.value))
            if a.timing:
                print(ok.timing, file=sys.stderr)
        elif a.verb == "stats":
            s = await tenant.stats()
            print(f"queued={s.queued} running={s.running} overloaded={s.overloaded}")
            for gs in s.guests:
                print(f"{gs.name} warm={gs.warm} busy={gs.busy} waiting={gs.waiting} created={gs.created} "
                      f"reset={gs.reset} discarded={gs.discarded} calls={gs.calls} failed={gs.failed} "
                      f"timeouts={gs.timeouts} p50_us<={gs.p50_us} p99_us<={gs.p99_us}")
        elif a.verb == "configure":
            vm = _vm_settings_of(a)
            if (a.min_warm is None) != (a.max_vms is None) or (a.min_warm is None and vm is None):
                raise UsageError("configure needs --min-warm and --max-vms, VM options, or both")
            min_warm, max_vms, running = await tenant._configure(a.guest, a.min_warm, a.max_vms, vm)
            print(f"{a.guest} min_warm={min_warm} max_vms={max_vms}")
            if vm is not None:
                print(f"  {running}")
        elif a.verb == "bench":
            if a.function is None:
                raise UsageError("usage: bench ping | bench GUEST FUNCTION [ARG...]")
            await _bench_call(tenant, a)
    return 0


def _non_negative(text: str) -> int:
    """An option's number: a count or a size, never below 0."""
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a non-negative integer")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sandpool_client.py",
        description="Client of sandpoold: upload guests, call their functions, read stats, benchmark.",
        epilog="Exit status: 0 success, 1 the server refused or the call failed, "
               "2 usage error, 3 connection or transport failure.")
    p.add_argument("--connect", default=os.environ.get("SANDPOOL_CONNECT") or DEFAULT_CONNECT,
                   metavar="ADDR", help="HOST:PORT, tcp:HOST:PORT or unix:PATH "
                   f"(default: $SANDPOOL_CONNECT or {DEFAULT_CONNECT})")
    p.add_argument("--token", default=os.environ.get("SANDPOOL_TOKEN"),
                   help="tenant token (default: $SANDPOOL_TOKEN)")
    p.add_argument("--schema", default=None, metavar="FILE",
                   help=f"sandpool.capnp to speak (default: ${SCHEMA_ENV} or the repository's rpc-schema/)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs.add_parser("ping", help="round trip to the server")
    verbs.add_parser("version", help="the server's protocol and release")
    verbs.add_parser("info", help="this tenant's name and quota")
    up = verbs.add_parser("upload", help="upload a guest ELF (prints its exports)")
    up.add_argument("name")
    up.add_argument("file")
    up.add_argument("--replace", action="store_true", help="replace an existing guest of that name")
    verbs.add_parser("list", help="this tenant's guests and their functions")
    rm = verbs.add_parser("remove", help="delete a guest")
    rm.add_argument("name")
    verbs.add_parser("stats", help="pool statistics of this tenant")
    conf = verbs.add_parser("configure", help="change a guest's pool within the quota")
    conf.add_argument("guest")
    conf.add_argument("--min-warm", type=_non_negative)
    conf.add_argument("--max-vms", type=_non_negative)
    for parser in (up, conf):
        vm = parser.add_argument_group("VM options (unset: the server's default, or unchanged)")
        vm.add_argument("--memory-mib", type=_non_negative, default=0, help="guest memory of each VM (a multiple of 2)")
        vm.add_argument("--stack-kib", type=_non_negative, default=0, help="stack (a multiple of 4)")
        vm.add_argument("--input-kib", type=_non_negative, default=0, help="input buffer: a call's arguments")
        vm.add_argument("--output-kib", type=_non_negative, default=0, help="output buffer: a call's result")
        vm.add_argument("--max-host-calls", type=_non_negative, default=0, help="host calls one call may make")
    for verb, text in (("call", "call a function; arguments are parsed by its parameter types (bytes as hex)"),
                       ("bench", "N calls at a given concurrency: p50/p99 latency and calls/s "
                                 "(bench ping: round trips only)")):
        v = verbs.add_parser(verb, help=text)
        if verb == "call":
            v.add_argument("guest", metavar="GUEST")
            v.add_argument("function", metavar="FUNCTION")
        else:
            v.add_argument("guest", metavar="GUEST|ping")
            v.add_argument("function", nargs="?", metavar="FUNCTION")
        v.add_argument("args", nargs="*", metavar="ARG")
        v.add_argument("--timeout-ms", type=_non_negative, default=0, help="shorten the server's call timeout")
        v.add_argument("--kv", action="append", default=[], metavar="KEY=VALUE",
                       help="serve the host function kv_get(string) -> string from these pairs (repeatable)")
        if verb == "call":
            v.add_argument("--timing", action="store_true", help="print the server's timing on stderr")
        else:
            v.add_argument("--concurrency", type=int, default=1, help="calls in flight (default 1)")
            v.add_argument("--calls", type=int, default=10000, help="calls to measure (default 10000)")
            v.add_argument("--warmup", type=int, default=200, help="calls before measuring (default 200)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    a = parser.parse_args(argv)
    try:
        parse_address(a.connect)
    except ValueError as e:
        parser.error(str(e))
    try:
        return run(_command(a))
    # ValueError: a value the request cannot carry (an option too large for
    # its field), refused before anything was sent.
    except (UsageError, SchemaError, ValueError) as e:
        parser.print_usage(sys.stderr)
        print(f"sandpool_client: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SandpoolError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except capnp.KjException as e:
        print(f"sandpool_client: connection failed: {e.description}", file=sys.stderr)
        return EXIT_CONNECTION


if __name__ == "__main__":
    sys.exit(main())
