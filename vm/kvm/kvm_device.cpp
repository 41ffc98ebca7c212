#include "vm/kvm/kvm_device.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "vm/kvm/cpuid.h"
#include "vm/kvm/kvm_ioctl.h"

namespace sandpool::vm::kvm {
namespace {

constexpr int kStableApiVersion = 12;  // KVM_API_VERSION since Linux 2.6.22

Error unavailable(std::string message) {
  return makeError(ErrorKind::kBackendUnavailable, std::move(message));
}

struct RequiredCapability {
  int cap;
  const char* name;
  const char* why;
};

constexpr RequiredCapability kRequired[] = {
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "guest memory from a host mapping"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT", "timeouts (Linux 4.11)"},
    {KVM_CAP_SYNC_REGS, "KVM_CAP_SYNC_REGS", "resets without register ioctls (Linux 4.16)"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID", "CPUID filtering"},
    {KVM_CAP_XSAVE, "KVM_CAP_XSAVE", "FPU/SSE state in snapshots"},
    {KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS", "debug registers in snapshots"},
    {KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS", "pending events in snapshots"},
};

constexpr int kSyncRegsNeeded = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS;

}  // namespace

Expected<std::shared_ptr<const KvmDevice>> KvmDevice::open(const char* path) {
  std::shared_ptr<KvmDevice> device(new KvmDevice());
  device->fd_.reset(::open(path, O_RDWR | O_CLOEXEC));
  if (!device->fd_.valid()) {
    const int err = errno;
    switch (err) {
      case ENOENT:
      case ENXIO:
      case ENODEV:
        return unavailable(fmt::format(
            "open {}: {}: this host offers no KVM (no hardware virtualisation, or the kvm "
            "module is not loaded)",
            path, errnoText(err)));
      case EACCES:
      case EPERM:
        return unavailable(fmt::format(
            "open {}: {}: permission denied; run as a member of the device's group (usually "
            "'kvm')",
            path, errnoText(err)));
      default: return unavailable(fmt::format("open {}: {}", path, errnoText(err)));
    }
  }
  const int version = ::ioctl(device->fd_.get(), KVM_GET_API_VERSION, 0);
  if (version < 0) {
    return unavailable(
        fmt::format("KVM_GET_API_VERSION on {}: {}: not a KVM device", path, errnoText(errno)));
  }
  if (version != kStableApiVersion) {
    return unavailable(fmt::format("KVM_GET_API_VERSION on {}: version {}, sandpool needs {}", path,
                                   version, kStableApiVersion));
  }
  if (auto checked = device->checkCapabilities(path); !checked) return checked.takeError();
  if (auto loaded = device->loadCpuid(); !loaded) return loaded.takeError();
  return std::shared_ptr<const KvmDevice>(std::move(device));
}

Expected<void> KvmDevice::checkCapabilities(const char* path) {
  for (const RequiredCapability& required : kRequired) {
    if (::ioctl(fd_.get(), KVM_CHECK_EXTENSION, required.cap) <= 0) {
      return unavailable(
          fmt::format("{} lacks {}, needed for {}", path, required.name, required.why));
    }
  }
  const int sync = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
  if ((sync & kSyncRegsNeeded) != kSyncRegsNeeded) {
    return unavailable(fmt::format("{}: KVM_CAP_SYNC_REGS offers {:#x}, sandpool needs {:#x}", path,
                                   sync, kSyncRegsNeeded));
  }
  has_msr_filter_ = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, KVM_CAP_X86_MSR_FILTER) > 0;
  max_memslots_ = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
  if (max_memslots_ < 1) {
    return unavailable(fmt::format("{}: KVM_CAP_NR_MEMSLOTS is {}", path, max_memslots_));
  }
  auto size = kvmIoctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0ul, "KVM_GET_VCPU_MMAP_SIZE",
                       ErrorKind::kBackendUnavailable);
  if (!size) return size.takeError();
  if (*size < static_cast<int>(sizeof(kvm_run))) {
    return unavailable(fmt::format("KVM_GET_VCPU_MMAP_SIZE: {} bytes, smaller than kvm_run ({})",
                                   *size, sizeof(kvm_run)));
  }
  vcpu_mmap_size_ = *size;
  return {};
}

Expected<void> KvmDevice::loadCpuid() {
  // KVM answers E2BIG until the buffer holds every entry.
  for (uint32_t capacity = 64; capacity <= 4096; capacity *= 2) {
    std::vector<uint8_t> buffer(kCpuid2HeaderSize + capacity * sizeof(kvm_cpuid_entry2));
    std::memcpy(buffer.data(), &capacity, sizeof(capacity));
    if (::ioctl(fd_.get(), kKvmGetSupportedCpuid, buffer.data()) < 0) {
      if (errno == E2BIG) continue;
      return unavailable(
          fmt::format("KVM_GET_SUPPORTED_CPUID ({} entries): {}", capacity, errnoText(errno)));
    }
    uint32_t count = 0;
    std::memcpy(&count, buffer.data(), sizeof(count));
    cpuid_.resize(count);
    std::memcpy(cpuid_.data(), buffer.data() + kCpuid2HeaderSize, count * sizeof(kvm_cpuid_entry2));
    filterCpuid(cpuid_);
    return {};
  }
  return unavailable("KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
}

}  // namespace sandpool::vm::kvm
