#!/usr/bin/env bash
# sandpool's main job, end to end: builds what is missing, starts sandpoold
# with the example tenant on the default backend, uploads the hello guest
# and the Wasm greeting (a wasm32-wasi module, translated at upload:
# docs/wasm.md) with the `sandpool` CLI, calls each, prints the results and
# the guests' output, and shuts the server down cleanly (SIGTERM, exit
# status 0).
#
#   scripts/demo.sh [NAME]        (default NAME: world)
#
# Environment: BUILD_DIR (default: build), SANDPOOL_BACKEND (default: auto).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
name=${1:-world}
token=demo-token-change-me-0001

if [[ ! -f $build_dir/build.ninja && ! -f $build_dir/Makefile ]]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build_dir" --target sandpoold sandpool hello wasm_greeting >/dev/null

work=$(mktemp -d)
server_pid=
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid"; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The server prints one line when it is ready to serve; read it instead of
# guessing how long start-up takes.
# Started as root, sandpoold serves as nobody once its sockets are open
# (docs/security.md, "Privileges"); nobody must reach the data directory.
run_as=()
if [[ $(id -u) == 0 ]]; then
  chmod 711 "$work"
  run_as=(--user nobody)
fi
exec {server_out}< <(exec "$build_dir/server/sandpoold" \
  --config server/examples/sandpoold.conf \
  --tenants server/examples/tenants.conf \
  --backend "${SANDPOOL_BACKEND:-auto}" \
  --data-dir "$work/data" \
  --listen-tcp 127.0.0.1:0 \
  --listen-unix "$work/sandpoold.sock" "${run_as[@]}" 2>"$work/sandpoold.log")
server_pid=$!
if ! read -r -t 60 -u "$server_out" ready; then
  echo "demo: sandpoold did not start; its log:" >&2
  cat "$work/sandpoold.log" >&2
  exit 1
fi
echo "== $ready"

cli() { "$build_dir/clients/cpp/sandpool" --connect "unix:$work/sandpoold.sock" --token "$token" "$@"; }
echo "== sandpool upload hello $build_dir/guest/examples/hello"
cli upload hello "$build_dir/guest/examples/hello"
echo "== sandpool call hello hello $name   (guest output, then the result)"
cli call hello hello "$name"
greeting_wasm=$build_dir/guest/wasm/examples/greeting.wasm
echo "== sandpool upload greeting $greeting_wasm   (a Wasm module)"
cli upload greeting "$greeting_wasm"
echo "== sandpool call greeting greet $name   (guest output, then the result)"
cli call greeting greet "$name"

echo "== stopping sandpoold (SIGTERM)"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
echo "== sandpoold exited with status $status; its log:"
cat "$work/sandpoold.log"
exit "$status"
