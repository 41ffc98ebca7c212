#!/usr/bin/env bash
# Sets up sandpool (Debian packages + Release build) and runs every test:
# unit, conformance (each backend this host can open), server integration,
# the Python client (skipped, and said so, where pycapnp is not installed)
# and the KVM suite inside QEMU; then each fuzz target briefly (scripts/fuzz.sh,
# its own clang build in build-fuzz), so that they keep building and a crash
# on the corpus or in a few seconds of fuzzing fails the run.
#   scripts/test.sh [build-dir]     (default: build)
#   SANDPOOL_FUZZ_SECONDS: seconds per fuzz target (default 15; 0 skips them)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
scripts/setup.sh "$build_dir"
status=0
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" || status=$?
# ctest only says "Skipped"; say why, from the skipped suites' own output.
grep -hE "skipped$|unavailable here" "$build_dir/Testing/Temporary/LastTest.log" | sort -u | sed 's/^/note: /' || true
fuzz_seconds=${SANDPOOL_FUZZ_SECONDS:-15}
if ((fuzz_seconds > 0)); then
  scripts/fuzz.sh all "$fuzz_seconds" || status=$?
else
  echo "note: fuzz targets skipped (SANDPOOL_FUZZ_SECONDS=0)"
fi
exit "$status"
