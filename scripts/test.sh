#!/usr/bin/env bash
# Sets up sandpool (Debian packages + Release build) and runs every test:
# unit, conformance (each backend this host can open), server integration,
# the Python client (skipped, and said so, where pycapnp is not installed)
# and the KVM suite inside QEMU.
#   scripts/test.sh [build-dir]     (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
scripts/setup.sh "$build_dir"
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)"
