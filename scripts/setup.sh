#!/usr/bin/env bash
# Installs every Debian 12 package sandpool needs and builds it (Release).
#   scripts/setup.sh [build-dir]     (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libboost-dev libboost-program-options-dev libspdlog-dev libfmt-dev
  libcapnp-dev capnproto libelf-dev libunicorn-dev libssl-dev libseccomp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # The systemd unit in server/examples is checked with systemd-analyze.
  systemd
  # The metrics test scrapes /metrics with curl and checks the page with
  # promtool (package prometheus; docs/server.md, "Metrics and health").
  curl prometheus
  python3 python3-pytest
  # The Kubernetes manifests in server/examples/kubernetes are checked
  # against the Kubernetes API schema that the Python client carries.
  python3-kubernetes python3-yaml
  # KVM tests: a Debian kernel booted under QEMU offers a real /dev/kvm.
  qemu-system-x86 busybox-static cpio
  # Fuzz targets (scripts/fuzz.sh): clang with libFuzzer and the sanitizers.
  clang-14 libclang-rt-14-dev
  # Wasm guests (docs/wasm.md): wasm2c translates modules at upload; clang-14
  # with wasi-libc builds the example and test modules.
  wabt wasi-libc libclang-rt-14-dev-wasm32 lld-14
  # The Rust Wasm example: rustc with the wasm32-wasi standard library.
  rustc libstd-rust-dev-wasm32
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
# Fresh package lists also serve the KVM tests, which download a Debian
# kernel package with apt.
$SUDO apt-get update -qq
if ((${#missing[@]})); then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Unicorn: Debian 12 ships 2.0.1, which sends every guest store through a slow
# path (a warm emulated call costs about 3.6 us there against 1.0 us on 2.1,
# docs/performance.md). Debian 13's 2.1.1 packages need nothing newer than
# Debian 12's libc. apt fetches them, by name, from the Debian mirror this
# machine's apt already uses, through a sources list of its own in a
# temporary folder (the system's apt configuration is not touched); their
# SHA-256 is checked against the pins below before they are installed. Where
# they cannot be fetched, or with SANDPOOL_UNICORN=system, 2.0.1 stays
# (correct, slower).
unicorn_release=trixie
unicorn_version=2.1.1-2+b2
unicorn_debs=(
  "libunicorn2t64 3f760a28c65a93662edbcb21fceb2e0a1c0ab0e8277564fc572e6532949e3e3f"
  "libunicorn-dev 479613e244a6023c03708951a5f0e00fc96c83a4b74b4d74c9fe7d3a9050208b"
)
keep_old_unicorn() {  # $1: what failed; $2: the version kept
  echo "note: could not $1 Unicorn $unicorn_version; the emulated backend uses Unicorn $2 (slower guest stores)" >&2
}
# The URI of the Debian archive that apt is configured with for this release.
debian_mirror() {
  local codename
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  apt-get indextargets --format '$(REPO_URI)|$(RELEASE)|$(COMPONENT)|$(IDENTIFIER)' 2>/dev/null |
    awk -F'|' -v suite="$codename" '$2 == suite && $3 == "main" && $4 == "Packages" {print $1; exit}'
}
install_newer_unicorn() {
  local have dir mirror entry name sum names=() files=() apt_options
  have=$(dpkg-query -W -f='${Version}' libunicorn-dev)
  dpkg --compare-versions "$have" ge 2.1 && return 0
  [[ ${SANDPOOL_UNICORN:-} == system ]] && return 0
  [[ $(dpkg --print-architecture) == amd64 ]] || return 0
  mirror=$(debian_mirror)
  if [[ -z $mirror ]]; then
    keep_old_unicorn "find the Debian mirror apt uses, to fetch" "$have"
    return 0
  fi
  dir=$(mktemp -d)
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
  # apt downloads as its own unprivileged user where it can.
  if [[ $(id -u) == 0 ]] && id _apt >/dev/null 2>&1; then chown -R _apt "$dir"; fi
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $unicorn_release main" \
    > "$dir/sources.list"
  apt_options=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
               -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o Debug::NoLocking=1)
  for entry in "${unicorn_debs[@]}"; do
    read -r name _ <<<"$entry"
    names+=("$name=$unicorn_version")
  done
  if ! apt-get "${apt_options[@]}" update -qq ||
     ! (cd "$dir" && apt-get "${apt_options[@]}" download -qq "${names[@]}"); then
    keep_old_unicorn "fetch (apt-get download from $unicorn_release)" "$have"
    rm -rf "$dir"; return 0
  fi
  for entry in "${unicorn_debs[@]}"; do
    read -r name sum <<<"$entry"
    files+=("$dir/${name}_${unicorn_version}_amd64.deb")
    if ! echo "$sum  ${files[-1]}" | sha256sum -c --quiet -; then
      keep_old_unicorn "verify (SHA-256 differs from the pin)" "$have"
      rm -rf "$dir"; return 0
    fi
  done
  chmod 644 "${files[@]}"
  if DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${files[@]}"; then
    unicorn_changed=1
  else
    keep_old_unicorn install "$have"
  fi
  rm -rf "$dir"
}
unicorn_changed=0
install_newer_unicorn

build_args=()
if ((unicorn_changed)) && [[ -f $build_dir/CMakeCache.txt ]]; then
  # Configured and compiled against the old Unicorn: find and build anew.
  rm -f "$build_dir/CMakeCache.txt"
  build_args+=(--clean-first)
fi
# The Python client's tests run with the Debian interpreter that
# python3-pytest was installed for, not whichever python3 comes first on PATH;
# SANDPOOL_PYTHON names another (a virtual environment with pycapnp, say).
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPython3_EXECUTABLE="${SANDPOOL_PYTHON:-/usr/bin/python3}"
cmake --build "$build_dir" -j "$(nproc)" "${build_args[@]}"
