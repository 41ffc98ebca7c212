"""A real sandpoold for the Python client tests.

The server, its guests and the backend come from the environment that
tests/python/CMakeLists.txt sets for ctest:

    SANDPOOLD              the sandpoold binary
    SANDPOOL_GUEST_<NAME>  guest ELFs (HELLO, ADD, ECHO, PROBE) and Wasm modules
                           (GREETING_WASM, TRAPS_WASM)
    SANDPOOL_TEST_BACKEND  VM backend (default: emulated)

Nothing here imports pycapnp, so that a machine without it still collects
the test module and reports it as skipped.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "clients" / "python" / "sandpool_client.py"
TOKEN = "acme-python-client-token"
# Roomy enough for every guest and VM the tests use; distinct numbers, so
# that a test can tell them apart.
QUOTA = {"max_vms": 32, "max_guests": 20, "max_memory_mib": 2048, "max_concurrent_calls": 48, "queue_length": 200}
READY_TIMEOUT_S = 60


def required_path(variable: str) -> Path:
    value = os.environ.get(variable)
    if not value or not Path(value).is_file():
        pytest.fail(f"${variable} must name a built file (run these tests through ctest, "
                    f"which sets it); got {value!r}")
    return Path(value)


@dataclass
class Server:
    tcp: str    # HOST:PORT
    unix: str   # unix:PATH
    token: str
    process: subprocess.Popen[bytes]
    log: Path


def read_ready_line(process: subprocess.Popen[bytes], log: Path) -> str:
    """sandpoold prints one line, "sandpoold ready tcp=... unix=...", once it
    accepts connections; wait for that line, not for time to pass."""
    assert process.stdout is not None
    buffered = b""
    deadline = time.monotonic() + READY_TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffered:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                process.kill()
                pytest.fail(f"sandpoold not ready within {READY_TIMEOUT_S}s; its log:\n{log.read_text()}")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                process.wait()
                pytest.fail(f"sandpoold exited with {process.returncode} before it was ready; "
                            f"its log:\n{log.read_text()}")
            buffered += chunk
    return buffered.split(b"\n", 1)[0].decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    binary = required_path("SANDPOOLD")
    root = tmp_path_factory.mktemp("sandpoold")
    tenants = root / "tenants.ini"
    tenants.write_text(f"[acme]\ntoken = {TOKEN}\n" + "".join(f"{k} = {v}\n" for k, v in QUOTA.items()))
    log = root / "sandpoold.log"
    # The client is under test, not the VM backend: the emulator runs the
    # same guests on every machine, with or without /dev/kvm.
    backend = os.environ.get("SANDPOOL_TEST_BACKEND", "emulated")
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(binary), "--tenants", str(tenants), "--data-dir", str(root / "data"),
             "--listen-tcp", "127.0.0.1:0", "--listen-unix", "sandpoold.sock",
             "--backend", backend, "--workers", "2", "--min-warm", "1",
             # As root (CI) sandpoold must be told that is meant; the flag
             # changes nothing for other users.
             "--allow-root"],
            stdout=subprocess.PIPE, stderr=log_file)
    words = dict(w.split("=", 1) for w in read_ready_line(process, log).split() if "=" in w)
    yield Server(words["tcp"], "unix:" + words["unix"], TOKEN, process, log)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(server: Server):
    """Runs sandpool_client.py against the test server, as a user would."""

    def run(*args: str, connect: str | None = None, token: str | None = TOKEN,
            env: dict[str, str] | None = None) -> Result:
        # Only what the test passes: no $SANDPOOL_CONNECT/TOKEN/SCHEMA of the caller.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDPOOL_")} | (env or {})
        command = [sys.executable, str(SCRIPT), "--connect", connect or server.tcp]
        if token is not None:
            command += ["--token", token]
        done = subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=120)
        return Result(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture(scope="session")
def guest_file():
    """The built ELF of an example or test guest, by name."""
    return lambda name: required_path(f"SANDPOOL_GUEST_{name.upper()}")
