// One KVM virtual machine: its fd, its one memory slot (all of guest memory,
// with dirty logging) and its MSR filter. Created once per micro-VM and kept
// for its whole life; a reset only reads and clears the dirty log.
//
// Thread: used by the thread that owns the micro-VM.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "vm/dirty_pages.h"
#include "vm/error.h"
#include "vm/kvm/kvm_device.h"
#include "vm/unique_fd.h"

namespace sandpool::vm::kvm {

inline constexpr uint32_t kGuestMemorySlot = 0;

class KvmVm {
 public:
  // KVM_CREATE_VM, then guest memory [0, size) backed by `host_base` as slot
  // 0 with KVM_MEM_LOG_DIRTY_PAGES, then the MSR filter where KVM has one.
  static Expected<KvmVm> create(const KvmDevice& device, uint8_t* host_base, uint64_t size);

  int fd() const { return fd_.get(); }

  // KVM_GET_DIRTY_LOG: adds the pages the guest wrote since the last call to
  // `dirty` and clears the log (KVM write-protects them again).
  Expected<void> collectDirtyPages(DirtyPages& dirty);

 private:
  KvmVm() = default;
  Expected<void> setMsrFilter();

  UniqueFd fd_;
  uint64_t memory_size_ = 0;
  std::vector<uint64_t> dirty_bitmap_;  // one bit per guest page
};

}  // namespace sandpool::vm::kvm
