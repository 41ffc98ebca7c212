// /dev/kvm, opened once per backend: the API version and capability checks,
// and what every VM of this backend shares (the filtered CPUID, the size of
// the kvm_run mapping). Immutable after open(); any thread may use it.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "vm/error.h"
#include "vm/unique_fd.h"

namespace sandpool::vm::kvm {

inline constexpr const char* kKvmDevicePath = "/dev/kvm";

class KvmDevice {
 public:
  // Opens `path` and checks it is a KVM of the stable API (version 12) with
  // the capabilities the backend relies on. Errors are kBackendUnavailable
  // and say which of these failed: no such device, permission denied, not a
  // KVM device, wrong API version, missing capability.
  static Expected<std::shared_ptr<const KvmDevice>> open(const char* path);

  int fd() const { return fd_.get(); }
  int vcpuMmapSize() const { return vcpu_mmap_size_; }
  // KVM_GET_SUPPORTED_CPUID after filterCpuid().
  const std::vector<kvm_cpuid_entry2>& cpuid() const { return cpuid_; }
  // KVM_X86_SET_MSR_FILTER is there (Linux 5.10 and later).
  bool hasMsrFilter() const { return has_msr_filter_; }
  // Memory slots a VM may have; sandpool uses one.
  int maxMemslots() const { return max_memslots_; }

 private:
  KvmDevice() = default;
  Expected<void> checkCapabilities(const char* path);
  Expected<void> loadCpuid();

  UniqueFd fd_;
  int vcpu_mmap_size_ = 0;
  int max_memslots_ = 0;
  bool has_msr_filter_ = false;
  std::vector<kvm_cpuid_entry2> cpuid_;
};

}  // namespace sandpool::vm::kvm
