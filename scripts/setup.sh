#!/usr/bin/env bash
# Installs every Debian 12 package sandpool needs and builds it (Release).
#   scripts/setup.sh [build-dir]     (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}

packages=(
  build-essential cmake ninja-build pkg-config git curl ca-certificates
  libboost-dev libboost-program-options-dev libspdlog-dev libfmt-dev
  libcapnp-dev capnproto libelf-dev libunicorn-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-pytest
  # KVM tests: a Debian kernel booted under QEMU offers a real /dev/kvm.
  qemu-system-x86 busybox-static cpio
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
# Debian 12's libc, so take them from Debian's archive, pinned by checksum,
# and stay on 2.0.1 (correct, slower) where they cannot be fetched or where
# SANDPOOL_UNICORN=system asks for the distribution's own.
unicorn_version=2.1.1-2+b2
unicorn_debs=(
  "libunicorn2t64_${unicorn_version}_amd64.deb 3f760a28c65a93662edbcb21fceb2e0a1c0ab0e8277564fc572e6532949e3e3f"
  "libunicorn-dev_${unicorn_version}_amd64.deb 479613e244a6023c03708951a5f0e00fc96c83a4b74b4d74c9fe7d3a9050208b"
)
keep_old_unicorn() {  # $1: what failed (fetch, install); $2: the version kept
  echo "note: could not $1 Unicorn $unicorn_version; the emulated backend uses Unicorn $2 (slower guest stores)" >&2
}
install_newer_unicorn() {
  local have dir files=() entry name sum path
  have=$(dpkg-query -W -f='${Version}' libunicorn-dev)
  dpkg --compare-versions "$have" ge 2.1 && return 0
  [[ ${SANDPOOL_UNICORN:-} == system ]] && return 0
  [[ $(dpkg --print-architecture) == amd64 ]] || return 0
  dir=$(mktemp -d)
  for entry in "${unicorn_debs[@]}"; do
    read -r name sum <<<"$entry"
    path=deb.debian.org/debian/pool/main/u/unicorn-engine/$name
    # Plain HTTP as apt itself uses, where HTTPS is not let through: the
    # checksum is what vouches for the file.
    if ! { curl -fsS -m 120 -o "$dir/$name" "https://$path" || curl -fsS -m 120 -o "$dir/$name" "http://$path"; } ||
       ! echo "$sum  $dir/$name" | sha256sum -c --quiet -; then
      keep_old_unicorn fetch "$have"
      rm -rf "$dir"; return 0
    fi
    files+=("$dir/$name")
  done
  chmod 755 "$dir"; chmod 644 "${files[@]}"
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
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" -j "$(nproc)" "${build_args[@]}"
