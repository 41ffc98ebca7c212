#include "vm/kvm/kvm_vm.h"

#include <fmt/format.h>
#include <sys/ioctl.h>

#include <bit>
#include <cerrno>

#include "vm/kvm/kvm_ioctl.h"
#include "vm/x86.h"

namespace sandpool::vm::kvm {

Expected<KvmVm> KvmVm::create(const KvmDevice& device, uint8_t* host_base, uint64_t size) {
  KvmVm vm;
  auto fd = kvmIoctl(device.fd(), KVM_CREATE_VM, 0ul, "KVM_CREATE_VM");
  if (!fd) return fd.takeError();
  vm.fd_.reset(*fd);
  vm.memory_size_ = size;
  const uint64_t pages = size / x86::kSmallPage;
  vm.dirty_bitmap_.assign((pages + 63) / 64, 0);

  kvm_userspace_memory_region region{};
  region.slot = kGuestMemorySlot;
  region.flags = KVM_MEM_LOG_DIRTY_PAGES;
  region.guest_phys_addr = 0;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host_base);
  auto set = kvmIoctl(vm.fd(), KVM_SET_USER_MEMORY_REGION, &region,
                      fmt::format("KVM_SET_USER_MEMORY_REGION slot {} ({} MiB at {})",
                                  kGuestMemorySlot, size >> 20, fmt::ptr(host_base)));
  if (!set) return set.takeError();

  if (device.hasMsrFilter()) {
    if (auto filtered = vm.setMsrFilter(); !filtered) return filtered.takeError();
  }
  return vm;
}

// Denies every MSR to the guest (a denied access raises #GP in the guest)
// except the FS/GS bases, which it can set through segment loads anyway and
// which a reset restores with the segment registers. KVM's own accesses for
// the host (KVM_SET_MSRS) are not filtered.
Expected<void> KvmVm::setMsrFilter() {
  static const uint8_t allow_bases = 0b11;  // bit per MSR from base: FS_BASE, GS_BASE
  kvm_msr_filter filter{};
  filter.flags = KVM_MSR_FILTER_DEFAULT_DENY;
  filter.ranges[0].flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE;
  filter.ranges[0].base = x86::kMsrFsBase;
  filter.ranges[0].nmsrs = 2;
  filter.ranges[0].bitmap = const_cast<uint8_t*>(&allow_bases);
  auto set = kvmIoctl(fd(), KVM_X86_SET_MSR_FILTER, &filter,
                      "KVM_X86_SET_MSR_FILTER (deny all but FS/GS base)");
  if (!set) return set.takeError();
  return {};
}

Expected<void> KvmVm::collectDirtyPages(DirtyPages& dirty) {
  kvm_dirty_log log{};
  log.slot = kGuestMemorySlot;
  log.dirty_bitmap = dirty_bitmap_.data();
  if (::ioctl(fd(), KVM_GET_DIRTY_LOG, &log) < 0) {
    return makeError(ErrorKind::kResetFailed,
                     fmt::format("KVM_GET_DIRTY_LOG slot {} ({} pages): {}", kGuestMemorySlot,
                                 memory_size_ / x86::kSmallPage, errnoText(errno)));
  }
  for (size_t word = 0; word < dirty_bitmap_.size(); ++word) {
    for (uint64_t bits = dirty_bitmap_[word]; bits != 0; bits &= bits - 1) {
      dirty.add(word * 64 + static_cast<uint64_t>(std::countr_zero(bits)));
    }
  }
  return {};
}

}  // namespace sandpool::vm::kvm
