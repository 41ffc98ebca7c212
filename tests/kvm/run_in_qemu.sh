#!/usr/bin/env bash
# Runs test programs against a real /dev/kvm on machines that have none: boots
# a Debian kernel under QEMU's software CPU (TCG emulates AMD SVM with nested
# paging, so kvm-amd loads inside it), from an initramfs holding busybox, the
# KVM modules, the programs and the shared libraries they need. Each program
# runs in turn; the exit code says whether all of them passed.
#
#   run_in_qemu.sh --work-dir DIR [--smp N] [--memory MiB] [--timeout SECONDS]
#                  [--file PATH]... --run "PROGRAM [ARGS]" [--run ...]
#
# PROGRAMs and --file PATHs keep their absolute paths inside the VM, so
# programs that find their guest binaries by build-tree path still do.
#
# The kernel comes from the newest linux-image-*-amd64-unsigned package
# (apt-get download, cached in DIR), or from the .deb named by
# SANDPOOL_KVM_KERNEL_DEB. Exit codes: 0 all passed, 1 a program failed or the
# VM gave no result, 2 usage or setup error, 77 qemu-system-x86_64 missing.
set -euo pipefail

work_dir=""
# One vCPU: with two, QEMU's multi-threaded TCG running nested SVM froze the
# whole emulated machine now and then (seen with QEMU 7.2); one vCPU never
# did, and the tests' threads still interleave through preemption.
smp=1
memory=2048
timeout_s=480
files=()
runs=()
while (($#)); do
  case "$1" in
    --work-dir) work_dir=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --file) files+=("$2"); shift 2 ;;
    --run) runs+=("$2"); shift 2 ;;
    *) echo "run_in_qemu: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [[ -z $work_dir || ${#runs[@]} -eq 0 ]]; then
  echo "usage: run_in_qemu.sh --work-dir DIR [--file PATH]... --run 'PROGRAM ARGS'..." >&2
  exit 2
fi

if ! command -v qemu-system-x86_64 >/dev/null; then
  echo "SKIPPED: qemu-system-x86_64 is not installed (Debian package qemu-system-x86);" \
       "the KVM tests did not run"
  exit 77
fi

fail_setup() { echo "run_in_qemu: $*" >&2; exit 2; }

busybox=$(command -v busybox || true)
[[ -n $busybox ]] || fail_setup "busybox not found (install busybox-static)"
if ldd "$busybox" >/dev/null 2>&1; then
  fail_setup "$busybox is dynamically linked; install busybox-static"
fi
command -v cpio >/dev/null || fail_setup "cpio not found (install cpio)"

mkdir -p "$work_dir"
work_dir=$(cd "$work_dir" && pwd)

# --- the kernel and its KVM modules -----------------------------------------
kernel_dir=$work_dir/kernel
module_paths=(
  kernel/virt/lib/irqbypass.ko
  kernel/drivers/crypto/ccp/ccp.ko
  kernel/arch/x86/kvm/kvm.ko
  kernel/arch/x86/kvm/kvm-amd.ko
)
if [[ ! -f $kernel_dir/ready ]]; then
  rm -rf "$kernel_dir"
  mkdir -p "$kernel_dir/root"
  deb=${SANDPOOL_KVM_KERNEL_DEB:-}
  if [[ -z $deb ]]; then
    package=$(apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-amd64-unsigned$' |
              awk '{print $1}' | sort -V | tail -n 1)
    [[ -n $package ]] || fail_setup "no linux-image-*-amd64-unsigned package known to apt" \
                                    "(run apt-get update, or set SANDPOOL_KVM_KERNEL_DEB)"
    echo "run_in_qemu: downloading $package"
    (cd "$kernel_dir" && apt-get download "$package" >/dev/null 2>&1) ||
      fail_setup "apt-get download $package failed"
    deb=$(ls "$kernel_dir"/*.deb)
  fi
  # Only the kernel image and the four modules (the whole package unpacks
  # to some 400 MB); newer kernels ship modules compressed.
  patterns=('./boot/vmlinuz-*')
  for m in "${module_paths[@]}"; do patterns+=("./lib/modules/*/$m" "./lib/modules/*/$m.xz" "./lib/modules/*/$m.zst"); done
  # tar fails on the patterns that match nothing (.ko where modules are
  # .ko.xz, and the other way round); what must be there is checked below.
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$kernel_dir/root" --wildcards "${patterns[@]}" \
    2>/dev/null || true
  ls "$kernel_dir"/root/boot/vmlinuz-* >/dev/null 2>&1 || fail_setup "no kernel image in $deb"
  rm -f "$kernel_dir"/*.deb
  touch "$kernel_dir/ready"
fi
vmlinuz=$(ls "$kernel_dir"/root/boot/vmlinuz-* | head -n 1)
modules=$(ls -d "$kernel_dir"/root/lib/modules/* | head -n 1)

# --- the initramfs -----------------------------------------------------------
root=$work_dir/initramfs
rm -rf "$root"
mkdir -p "$root"/{bin,mods,proc,sys,dev,tmp,etc}
cp "$busybox" "$root/bin/busybox"
for m in "${module_paths[@]}"; do
  name=$(basename "$m")
  if [[ -f $modules/$m ]]; then
    cp "$modules/$m" "$root/mods/$name"
  elif [[ -f $modules/$m.xz ]]; then
    xz -dc "$modules/$m.xz" > "$root/mods/$name"
  elif [[ -f $modules/$m.zst ]]; then
    zstd -qdc "$modules/$m.zst" > "$root/mods/$name"
  else
    fail_setup "module $m missing from the kernel package"
  fi
done

copy_in() {  # copies a file to the same absolute path inside the VM
  local path=$1
  [[ -e $path ]] || fail_setup "$path does not exist (build the test targets first)"
  mkdir -p "$root$(dirname "$path")"
  cp -L "$path" "$root$path"
}

copy_with_libraries() {
  local program=$1
  copy_in "$program"
  # "libfoo.so => /path (0x...)" and the loader's own "/lib64/ld-... (0x...)".
  while read -r lib; do
    [[ -e $root$lib ]] || copy_in "$lib"
  done < <(ldd "$program" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
}

: > "$root/runs"
for run in "${runs[@]}"; do
  read -r program _ <<<"$run"
  copy_with_libraries "$program"
  printf '%s\n' "$run" >> "$root/runs"
done
for f in "${files[@]}"; do
  copy_in "$f"
done

cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
for m in irqbypass ccp kvm kvm-amd; do
  insmod /mods/$m.ko || echo "SANDPOOL-QEMU: insmod $m.ko failed"
done
# Inside this VM the KVM tests must run: a missing /dev/kvm is a failure.
# KVM under TCG runs guest code at emulation speed: the self-test measures
# and reports it, but must not refuse it (docs/kvm.md, "The self-test").
export SANDPOOL_REQUIRE_KVM=1 SANDPOOL_KVM_SPEED_CHECK=waive GTEST_COLOR=no
status=0
[ -c /dev/kvm ] || { echo "SANDPOOL-QEMU: /dev/kvm is missing after loading kvm-amd"; status=1; }
set -o pipefail
while read -r run; do
  echo "SANDPOOL-QEMU: run: $run"
  start=$(date +%s)
  $run 2>&1 | tee /output
  rc=$?
  # A test that skips here did not run on KVM: that is a failure.
  if grep -q '^\[  SKIPPED \]' /output; then
    echo "SANDPOOL-QEMU: tests were skipped on KVM"
    rc=1
  fi
  echo "SANDPOOL-QEMU: exit $rc after $(( $(date +%s) - start )) s: $run"
  [ $rc -eq 0 ] || status=1
done < /runs
echo "SANDPOOL-QEMU-RESULT: status=$status"
poweroff -f
INIT
chmod +x "$root/init"

initrd=$work_dir/initrd.gz
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 > "$initrd")

# --- boot ---------------------------------------------------------------------
log=$work_dir/console.log
echo "run_in_qemu: booting $(basename "$vmlinuz") under TCG ($smp vCPUs, $memory MiB," \
     "initramfs $(du -h "$initrd" | cut -f1)); console in $log"
set +e
timeout --foreground "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -smp "$smp" \
  -m "$memory" -nographic -no-reboot -kernel "$vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 quiet panic=-1 oops=panic" < /dev/null 2>&1 | tr -d '\r' | tee "$log"
qemu_status=${PIPESTATUS[0]}
set -e

result=$(grep -a '^SANDPOOL-QEMU-RESULT: status=' "$log" | tail -n 1 || true)
if [[ -z $result ]]; then
  if [[ $qemu_status -eq 124 ]]; then
    echo "FAILED: the QEMU VM did not finish within $timeout_s s"
  else
    echo "FAILED: the QEMU VM ended (exit $qemu_status) without reporting a result"
  fi
  exit 1
fi
if [[ $result == "SANDPOOL-QEMU-RESULT: status=0" ]]; then
  echo "PASSED: every program passed on KVM inside QEMU"
  exit 0
fi
echo "FAILED: a program failed on KVM inside QEMU (see the 'SANDPOOL-QEMU: exit' lines)"
exit 1
