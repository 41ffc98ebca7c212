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
status=0
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" || status=$?
# ctest only says "Skipped"; say why, from the skipped suites' own output.
grep -hE "skipped$|unavailable here" "$build_dir/Testing/Temporary/LastTest.log" | sort -u | sed 's/^/note: /' || true
exit "$status"
