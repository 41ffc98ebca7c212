// One micro-VM on KVM: its VM, its vCPU and its reset. Both fds, the memory
// slot and the kvm_run mapping are created once and kept for the VM's life.
//
// A warm call costs four system calls: KVM_RUN (until the guest's DONE),
// then in reset() KVM_GET_DIRTY_LOG, KVM_SET_XSAVE and KVM_SET_DEBUGREGS.
// General registers, segment and control registers and pending events go
// back through kvm_run's sync-regs area and take effect inside the next
// KVM_RUN; dirty pages are copied back from the snapshot with memcpy. Each
// host call adds one KVM_RUN.
//
// Thread: one thread at a time calls everything but interrupt(), which any
// thread may call.
#pragma once

#include <linux/kvm.h>
#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>

#include "vm/backend.h"
#include "vm/dirty_pages.h"
#include "vm/guest_memory.h"
#include "vm/kvm/kvm_cpu_state.h"
#include "vm/kvm/kvm_device.h"
#include "vm/kvm/kvm_vm.h"
#include "vm/mapping.h"
#include "vm/page_reset.h"
#include "vm/unique_fd.h"

namespace sandpool::vm::kvm {

class KvmMicroVm final : public MicroVm {
 public:
  // Creates the VM over `memory` (which must outlive the vCPU), its vCPU and
  // the long-mode entry state: CR3 at the page tables prepareImage() wrote,
  // rip = entry, rdi = the boot info, rsp = the stack top.
  static Expected<std::unique_ptr<KvmMicroVm>> create(const KvmDevice& device, int kick_signal,
                                                      GuestMemory& memory,
                                                      const MemoryLayout& layout, uint64_t entry);
  ~KvmMicroVm() override = default;

  RunExit run(PortHandler& handler) override;
  void interrupt() noexcept override;
  void clearInterrupt() noexcept override;

  Expected<uint64_t> readRegister(Register reg) override;
  // Completes the pending `out` first, so the state is the one after it and
  // rip already the address after the `out`: `resume_rip` is not needed.
  Expected<std::unique_ptr<CpuState>> saveCpuState(uint64_t resume_rip) override;
  Expected<void> loadCpuState(const CpuState& state) override;

  Expected<void> armReset(std::span<const uint8_t> snapshot_contents) override;
  Expected<ResetStats> reset() override;

 private:
  // What the last exit left for the next KVM_RUN to finish.
  enum class Pending {
    kNone,
    kOut,    // an `out` the handler consumed: KVM advances rip on re-entry
    kOther,  // anything else (an `in`, MMIO, an internal error): flushed before a reset
  };

  KvmMicroVm(KvmVm vm, UniqueFd fd, Mapping run_mapping, GuestMemory& memory, int kick_signal);
  Expected<void> setEntryState(const MemoryLayout& layout, uint64_t entry);
  Expected<void> setCpuid(const KvmDevice& device);

  kvm_run& kvmRun() const { return *reinterpret_cast<kvm_run*>(run_mapping_.data()); }
  std::atomic_ref<uint8_t> immediateExit() const;
  void rearmImmediateExit() noexcept;

  std::optional<RunExit> onIo(PortHandler& handler);
  RunExit faultExit(std::string reason, FaultInfo fault);
  RunExit exitToFault();

  // KVM_RUN with immediate_exit set: finishes a pending exit without running
  // a guest instruction, and applies registers queued in the sync-regs area.
  Expected<void> settle(std::string_view why);
  Expected<void> readCpuState(KvmCpuState& state);
  Expected<void> writeCpuState(const KvmCpuState& state);

  KvmVm vm_;
  UniqueFd fd_;
  Mapping run_mapping_;
  GuestMemory& memory_;
  const int kick_signal_;

  std::atomic<bool> interrupted_{false};
  std::mutex thread_mutex_;  // guards running_thread_ against interrupt()
  std::optional<pthread_t> running_thread_;

  Pending pending_ = Pending::kNone;
  uint64_t pending_rip_ = 0;

  std::unique_ptr<KvmCpuState> reset_state_;
  std::optional<PageReset> page_reset_;  // set by armReset()
  DirtyPages guest_dirty_;               // the dirty log's pages
};

}  // namespace sandpool::vm::kvm
