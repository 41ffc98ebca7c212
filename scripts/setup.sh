#!/usr/bin/env bash
# Installs every Debian 12 package sandpool needs and builds it (Release).
#   scripts/setup.sh [build-dir]     (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}

packages=(
  build-essential cmake ninja-build pkg-config git
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

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" -j "$(nproc)"
