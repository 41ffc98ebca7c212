#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang, in a build directory
# of their own, and runs each for SECONDS. A crash, a sanitizer report or a
# violated property fails the run; its input is saved under
# BUILD/tests/fuzz/crashes/TARGET/ and its log's end is printed.
#   scripts/fuzz.sh TARGET|all SECONDS [build-dir]     (default: build-fuzz)
# Targets: guest_image value export_table host_call tenants_file rpc_message
# (docs/security.md, "Fuzzing"). Each run starts from the committed seeds
# (tests/fuzz/corpus/TARGET), the generated ones (BUILD/tests/fuzz/seeds/
# TARGET) and what earlier runs in this build directory found
# (BUILD/tests/fuzz/found/TARGET, where new inputs go).
set -euo pipefail
cd "$(dirname "$0")/.."
all_targets=(guest_image value export_table host_call tenants_file rpc_message)
usage() {
  echo "usage: $0 TARGET|all SECONDS [build-dir]; targets: ${all_targets[*]}" >&2
  exit 2
}
(($# >= 2 && $# <= 3)) || usage
[[ $2 =~ ^[1-9][0-9]*$ ]] || usage
if [[ $1 == all ]]; then
  targets=("${all_targets[@]}")
elif [[ " ${all_targets[*]} " == *" $1 "* ]]; then
  targets=("$1")
else
  usage
fi
seconds=$2
build_dir=${3:-build-fuzz}

configure_args=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSANDPOOL_FUZZ=ON
                -DSANDPOOL_BUILD_TESTS=OFF -DSANDPOOL_BUILD_BENCH=OFF)
if command -v ccache >/dev/null; then
  configure_args+=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
mkdir -p "$build_dir"
build_log=$build_dir/fuzz-build.log
if ! { CC=clang-14 CXX=clang++-14 cmake -S . -B "$build_dir" "${configure_args[@]}" &&
       cmake --build "$build_dir" --target sandpool_fuzzers -j "$(nproc)"; } >"$build_log" 2>&1; then
  tail -n 40 "$build_log" >&2
  echo "fuzz: building the fuzz targets failed (log: $build_log)" >&2
  exit 1
fi

fuzz_dir=$build_dir/tests/fuzz
# Unicorn keeps 32 bytes per engine past uc_close() (tests/lsan.supp).
export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp
status=0
for target in "${targets[@]}"; do
  found=$fuzz_dir/found/$target crashes=$fuzz_dir/crashes/$target log=$fuzz_dir/$target.log
  mkdir -p "$found" "$crashes"
  corpora=("$found" "tests/fuzz/corpus/$target")
  [[ -d $fuzz_dir/seeds/$target ]] && corpora+=("$fuzz_dir/seeds/$target")
  # -timeout: an input that takes this long is a hang, reported as a crash.
  if "$fuzz_dir/${target}_fuzzer" -max_total_time="$seconds" -timeout=30 -print_final_stats=1 \
       -artifact_prefix="$crashes/" "${corpora[@]}" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    corpus=$(ls "$found" | wc -l)
    echo "fuzz $target: ${runs:-?} inputs in ${seconds} s, no failure (${corpus} found inputs kept)"
  else
    tail -n 40 "$log" >&2
    echo "fuzz $target: FAILED (log: $log; input saved in $crashes/)" >&2
    status=1
  fi
done
exit "$status"
