"""Runs the Python client tests for ctest (see CMakeLists.txt here).

Exit status 5, which ctest counts as skipped, when they cannot run because
pycapnp or pytest is missing from the interpreter ctest was configured with;
the line printed says which is missing and for which interpreter. A pycapnp
that is there but does not import, and any failing test, fail the run.
"""
import importlib.util
import os
import sys
from pathlib import Path

# ctest changes into the build folder but leaves $PWD as it was, and libkj
# (under pycapnp) warns on stderr when the two differ.
os.environ["PWD"] = os.getcwd()

missing = [what for module, what in (("capnp", "pycapnp"), ("pytest", "pytest"))
           if importlib.util.find_spec(module) is None]
if missing:
    print(f"{' and '.join(missing)} not installed for {sys.executable} (docs/python-client.md, "
          "Tests): Python client tests skipped")
    sys.exit(5)

# An installed pycapnp that does not import (built against another libcapnp,
# say) fails the run: skipping would hide it behind "not installed".
try:
    import capnp  # noqa: E402, F401
except ImportError as broken:
    print(f"pycapnp is installed for {sys.executable} but does not import: {broken}")
    sys.exit(1)

import pytest  # noqa: E402  (only once it is known to be there)

# -rs names the reason of every skip; no cache folder in the source tree.
sys.exit(pytest.main(["-q", "-rs", "-p", "no:cacheprovider", str(Path(__file__).resolve().parent)]))
