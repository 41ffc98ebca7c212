"""Runs the Python client tests for ctest (see CMakeLists.txt here).

Exit status 5, which ctest counts as skipped, when they cannot run: pytest
is missing (said here), or pycapnp is (said by the test module, whose skip
makes pytest report that no test ran). Any failing test fails the run.
"""
import importlib.util
import os
import sys
from pathlib import Path

# ctest changes into the build folder but leaves $PWD as it was, and libkj
# (under pycapnp) warns on stderr when the two differ.
os.environ["PWD"] = os.getcwd()

if importlib.util.find_spec("pytest") is None:
    print("pytest not installed: Python client tests skipped")
    sys.exit(5)

import pytest  # noqa: E402  (only once it is known to be there)

# -rs names the reason of every skip; no cache folder in the source tree.
sys.exit(pytest.main(["-q", "-rs", "-p", "no:cacheprovider", str(Path(__file__).resolve().parent)]))
