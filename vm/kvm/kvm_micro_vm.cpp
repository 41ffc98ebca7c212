#include "vm/kvm/kvm_micro_vm.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "vm/kvm/kvm_ioctl.h"
#include "vm/kvm/page_tables.h"
#include "vm/kvm/vcpu_kick.h"
#include "vm/x86.h"

namespace sandpool::vm::kvm {
namespace {

constexpr uint32_t kSyncedOnReset = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS;

// Flat 64-bit segments. The guest SDK loads its own GDT, TSS and IDT first
// thing; until then these hidden-state values are what the CPU uses.
kvm_segment codeSegment() {
  kvm_segment s{};
  s.limit = 0xffffffff;
  s.selector = x86::kSelectorCode;
  s.type = x86::kSegCodeExecReadAccessed;
  s.present = 1;
  s.s = 1;
  s.l = 1;
  s.g = 1;
  return s;
}

kvm_segment dataSegment() {
  kvm_segment s{};
  s.limit = 0xffffffff;
  s.selector = x86::kSelectorData;
  s.type = x86::kSegDataReadWriteAccessed;
  s.present = 1;
  s.s = 1;
  s.db = 1;
  s.g = 1;
  return s;
}

kvm_segment taskSegment() {
  kvm_segment s{};
  s.limit = 0x67;
  s.selector = x86::kSelectorTss;
  s.type = x86::kSegTss64Busy;
  s.present = 1;
  return s;
}

// A kvm_msrs (C layout) with room for one entry.
class OneMsr {
 public:
  explicit OneMsr(uint32_t index) {
    const uint32_t count = 1;
    std::memcpy(buffer_, &count, sizeof(count));
    entry().index = index;
  }
  uint8_t* msrs() { return buffer_; }
  kvm_msr_entry& entry() { return *reinterpret_cast<kvm_msr_entry*>(buffer_ + kMsrsHeaderSize); }

 private:
  alignas(8) uint8_t buffer_[kMsrsHeaderSize + sizeof(kvm_msr_entry)] = {};
};

const char* internalErrorName(uint32_t suberror) {
  switch (suberror) {
    case KVM_INTERNAL_ERROR_EMULATION: return "instruction emulation failed";
    case KVM_INTERNAL_ERROR_SIMUL_EX: return "exception while delivering an exception";
    case KVM_INTERNAL_ERROR_DELIVERY_EV: return "event delivery failed";
    case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: return "unexpected hardware exit";
    default: return "unknown suberror";
  }
}

}  // namespace

Expected<std::unique_ptr<KvmMicroVm>> KvmMicroVm::create(const KvmDevice& device, int kick_signal,
                                                         GuestMemory& memory,
                                                         const MemoryLayout& layout,
                                                         uint64_t entry) {
  if (memory.size() != layout.memory_size) {
    return makeError(ErrorKind::kInternal,
                     fmt::format("KVM vCPU: guest memory is {} bytes, the layout says {}",
                                 memory.size(), layout.memory_size));
  }
  auto vm = KvmVm::create(device, memory.hostBase(), memory.size());
  if (!vm) return vm.takeError();
  auto fd = kvmIoctl(vm->fd(), KVM_CREATE_VCPU, 0ul, "KVM_CREATE_VCPU 0");
  if (!fd) return fd.takeError();
  UniqueFd vcpu_fd(*fd);
  auto run_mapping = Mapping::map(device.vcpuMmapSize(), PROT_READ | PROT_WRITE, MAP_SHARED,
                                  vcpu_fd.get(), "kvm_run of vCPU 0");
  if (!run_mapping) return run_mapping.takeError();

  std::unique_ptr<KvmMicroVm> vcpu(new KvmMicroVm(std::move(*vm), std::move(vcpu_fd),
                                                  std::move(*run_mapping), memory, kick_signal));
  if (auto set = vcpu->setCpuid(device); !set) return set.takeError();
  if (auto set = vcpu->setEntryState(layout, entry); !set) return set.takeError();
  // Every exit copies the general registers into kvm_run, so reading them
  // (host calls, fault reports) costs no system call.
  vcpu->kvmRun().kvm_valid_regs = KVM_SYNC_X86_REGS;
  return vcpu;
}

KvmMicroVm::KvmMicroVm(KvmVm vm, UniqueFd fd, Mapping run_mapping, GuestMemory& memory,
                       int kick_signal)
    : vm_(std::move(vm)),
      fd_(std::move(fd)),
      run_mapping_(std::move(run_mapping)),
      memory_(memory),
      kick_signal_(kick_signal),
      guest_dirty_(memory.pageCount()) {}

Expected<void> KvmMicroVm::setCpuid(const KvmDevice& device) {
  std::vector<uint8_t> buffer = cpuid2Buffer(device.cpuid());
  auto set = kvmIoctl(fd_.get(), kKvmSetCpuid2, buffer.data(),
                      fmt::format("KVM_SET_CPUID2 ({} entries)", device.cpuid().size()));
  if (!set) return set.takeError();
  return {};
}

Expected<void> KvmMicroVm::setEntryState(const MemoryLayout& layout, uint64_t entry) {
  kvm_sregs sregs{};
  if (auto got = kvmIoctl(fd_.get(), KVM_GET_SREGS, &sregs, "KVM_GET_SREGS"); !got) {
    return got.takeError();
  }
  sregs.cs = codeSegment();
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = dataSegment();
  sregs.tr = taskSegment();
  sregs.gdt = {};
  sregs.idt = {};
  sregs.cr0 = x86::kCr0LongMode;
  sregs.cr3 = kPml4Address;
  sregs.cr4 = x86::kCr4Pae | x86::kCr4Osfxsr | x86::kCr4Osxmmexcpt;
  sregs.efer = x86::kEferLme | x86::kEferLma | x86::kEferNxe;
  if (auto set = kvmIoctl(fd_.get(), KVM_SET_SREGS, &sregs,
                          fmt::format("KVM_SET_SREGS (long mode, cr3 {:#x})", kPml4Address));
      !set) {
    return set.takeError();
  }
  kvm_regs regs{};
  regs.rflags = x86::kRflagsReserved;
  regs.rip = entry;
  regs.rsp = layout.stack_top;
  regs.rdi = layout.boot_info_addr;
  if (auto set =
          kvmIoctl(fd_.get(), KVM_SET_REGS, &regs,
                   fmt::format("KVM_SET_REGS (rip {:#x}, rsp {:#x})", entry, layout.stack_top));
      !set) {
    return set.takeError();
  }
  kvmRun().cr8 = sregs.cr8;
  return {};
}

std::atomic_ref<uint8_t> KvmMicroVm::immediateExit() const {
  return std::atomic_ref<uint8_t>(kvmRun().immediate_exit);
}

// interrupt() stores the flag before immediate_exit, so clearing
// immediate_exit and then reading the flag can never lose an interrupt.
void KvmMicroVm::rearmImmediateExit() noexcept {
  immediateExit().store(0);
  if (interrupted_.load()) immediateExit().store(1);
}

void KvmMicroVm::interrupt() noexcept {
  interrupted_.store(true);
  immediateExit().store(1);
  std::lock_guard lock(thread_mutex_);
  if (running_thread_) pthread_kill(*running_thread_, kick_signal_);
}

void KvmMicroVm::clearInterrupt() noexcept {
  interrupted_.store(false);
  immediateExit().store(0);
}

RunExit KvmMicroVm::run(PortHandler& handler) {
  unblockKickSignalInThisThread(kick_signal_);
  {
    std::lock_guard lock(thread_mutex_);
    running_thread_ = pthread_self();
  }
  struct Unregister {
    KvmMicroVm& vcpu;
    ~Unregister() {
      std::lock_guard lock(vcpu.thread_mutex_);
      vcpu.running_thread_.reset();
    }
  } unregister{*this};

  for (;;) {
    if (interrupted_.load()) return RunExit{RunExit::Kind::kTimeout, {}, {}};
    if (::ioctl(fd_.get(), KVM_RUN, 0) < 0) {
      const int err = errno;
      if (err == EINTR || err == EAGAIN) {
        // A kick (or a stale immediate_exit): the loop head decides. KVM
        // finishes a pending exit before it looks for either.
        pending_ = Pending::kNone;
        rearmImmediateExit();
        continue;
      }
      return faultExit(fmt::format("KVM_RUN: {}", errnoText(err)), {});
    }
    pending_ = Pending::kNone;
    const kvm_run& run = kvmRun();
    if (run.exit_reason == KVM_EXIT_IO) {
      if (auto exit = onIo(handler)) return *exit;
      continue;
    }
    return exitToFault();
  }
}

std::optional<RunExit> KvmMicroVm::onIo(PortHandler& handler) {
  const kvm_run& run = kvmRun();
  const uint64_t rip = run.s.regs.regs.rip;
  if (run.io.direction != KVM_EXIT_IO_OUT || run.io.count != 1) {
    pending_ = Pending::kOther;
    FaultInfo fault;
    fault.rip = rip;
    return faultExit(fmt::format("{} on port {:#x} ({} x {} bytes): only `out` of a register "
                                 "reaches the host",
                                 run.io.direction == KVM_EXIT_IO_OUT ? "string out" : "in",
                                 run.io.port, run.io.count, run.io.size),
                     fault);
  }
  pending_ = Pending::kOut;
  pending_rip_ = rip;
  uint32_t value = 0;
  std::memcpy(&value, reinterpret_cast<const uint8_t*>(&run) + run.io.data_offset,
              std::min<size_t>(run.io.size, sizeof(value)));
  if (handler.onPortOut(run.io.port, value) == PortAction::kStop) {
    return RunExit{RunExit::Kind::kStopped, {}, {}};
  }
  return std::nullopt;
}

RunExit KvmMicroVm::faultExit(std::string reason, FaultInfo fault) {
  RunExit exit;
  exit.kind = RunExit::Kind::kFault;
  exit.fault = fault;
  exit.reason = std::move(reason);
  return exit;
}

RunExit KvmMicroVm::exitToFault() {
  const kvm_run& run = kvmRun();
  FaultInfo fault;
  fault.rip = run.s.regs.regs.rip;
  switch (run.exit_reason) {
    case KVM_EXIT_MMIO:
      // Only a guest that replaced the host's page tables can reach a
      // physical address outside its memory; report it as the page fault it
      // would be on real hardware without that memory.
      pending_ = Pending::kOther;
      fault.vector = x86::kVectorPageFault;
      fault.error_code = run.mmio.is_write ? x86::kPfWrite : 0;
      fault.address = run.mmio.phys_addr;
      return faultExit(
          fmt::format("MMIO {} of {} bytes at {:#x}: no guest memory there",
                      run.mmio.is_write ? "write" : "read", run.mmio.len, run.mmio.phys_addr),
          fault);
    case KVM_EXIT_HLT:
      // KVM has already stepped over the one-byte hlt.
      fault.rip -= 1;
      return faultExit(
          fmt::format("hlt at {:#x}: guests end calls through the DONE port", fault.rip), fault);
    case KVM_EXIT_SHUTDOWN:
      // KVM re-initialises the vCPU on shutdown; its rip no longer says where.
      return faultExit("triple fault: the vCPU shut down (an exception it could not deliver)",
                       FaultInfo{});
    case KVM_EXIT_FAIL_ENTRY:
      return faultExit(fmt::format("KVM could not enter the guest: hardware entry failure "
                                   "reason {:#x}",
                                   run.fail_entry.hardware_entry_failure_reason),
                       fault);
    case KVM_EXIT_INTERNAL_ERROR:
      pending_ = Pending::kOther;
      return faultExit(fmt::format("KVM internal error {} ({}) at {:#x}", run.internal.suberror,
                                   internalErrorName(run.internal.suberror), fault.rip),
                       fault);
    default:
      pending_ = Pending::kOther;
      return faultExit(
          fmt::format("unexpected KVM exit reason {} at {:#x}", run.exit_reason, fault.rip), fault);
  }
}

Expected<uint64_t> KvmMicroVm::readRegister(Register reg) {
  const kvm_regs& regs = kvmRun().s.regs.regs;
  switch (reg) {
    case Register::kRip: return regs.rip;
    case Register::kRsi: return regs.rsi;
    case Register::kRdi: return regs.rdi;
    case Register::kR8: return regs.r8;
  }
  return makeError(ErrorKind::kInternal, "KVM vCPU: unknown register");
}

Expected<void> KvmMicroVm::settle(std::string_view why) {
  // A multi-fragment MMIO access can take a few rounds; anything more means
  // the vCPU keeps exiting and will not settle.
  constexpr int kMaxRounds = 4;
  for (int round = 0; round < kMaxRounds; ++round) {
    immediateExit().store(1);
    const int result = ::ioctl(fd_.get(), KVM_RUN, 0);
    const int err = errno;
    rearmImmediateExit();
    if (result < 0 && (err == EINTR || err == EAGAIN)) {
      pending_ = Pending::kNone;
      return {};
    }
    if (result < 0) {
      return makeError(ErrorKind::kInternal,
                       fmt::format("KVM_RUN with immediate_exit ({}): {}", why, errnoText(err)));
    }
  }
  return makeError(ErrorKind::kInternal,
                   fmt::format("KVM_RUN with immediate_exit ({}): still exiting (reason {}) "
                               "after {} rounds",
                               why, kvmRun().exit_reason, kMaxRounds));
}

Expected<void> KvmMicroVm::readCpuState(KvmCpuState& state) {
  if (pending_ != Pending::kNone || kvmRun().kvm_dirty_regs != 0) {
    if (auto settled = settle("reading the CPU state"); !settled) return settled;
  }
  if (auto r = kvmIoctl(fd_.get(), KVM_GET_REGS, &state.regs, "KVM_GET_REGS"); !r) {
    return r.takeError();
  }
  if (auto r = kvmIoctl(fd_.get(), KVM_GET_SREGS, &state.sregs, "KVM_GET_SREGS"); !r) {
    return r.takeError();
  }
  if (auto r = kvmIoctl(fd_.get(), KVM_GET_VCPU_EVENTS, &state.events, "KVM_GET_VCPU_EVENTS"); !r) {
    return r.takeError();
  }
  if (auto r = kvmIoctl(fd_.get(), KVM_GET_DEBUGREGS, &state.debugregs, "KVM_GET_DEBUGREGS"); !r) {
    return r.takeError();
  }
  if (auto r = kvmIoctl(fd_.get(), kKvmGetXsave, &state.xsave, "KVM_GET_XSAVE"); !r) {
    return r.takeError();
  }
  OneMsr msr(x86::kMsrKernelGsBase);
  auto got = kvmIoctl(fd_.get(), kKvmGetMsrs, msr.msrs(), "KVM_GET_MSRS KERNEL_GS_BASE");
  if (!got) return got.takeError();
  if (*got != 1) {
    return makeError(ErrorKind::kInternal, "KVM_GET_MSRS KERNEL_GS_BASE: not read");
  }
  state.kernel_gs_base = msr.entry().data;
  return {};
}

Expected<void> KvmMicroVm::writeCpuState(const KvmCpuState& state) {
  if (pending_ != Pending::kNone) {
    if (auto settled = settle("loading a CPU state"); !settled) return settled;
  }
  // Registers queued for sync_regs would override the ioctls below.
  kvmRun().kvm_dirty_regs = 0;
  kvm_sregs sregs = state.sregs;
  kvm_regs regs = state.regs;
  kvm_vcpu_events events = state.events;
  kvm_debugregs debugregs = state.debugregs;
  if (auto r = kvmIoctl(fd_.get(), KVM_SET_SREGS, &sregs, "KVM_SET_SREGS"); !r) {
    return r.takeError();
  }
  if (auto r = kvmIoctl(fd_.get(), KVM_SET_REGS, &regs, "KVM_SET_REGS"); !r) {
    return r.takeError();
  }
  if (auto r = kvmIoctl(fd_.get(), KVM_SET_VCPU_EVENTS, &events, "KVM_SET_VCPU_EVENTS"); !r) {
    return r.takeError();
  }
  if (auto r = kvmIoctl(fd_.get(), KVM_SET_DEBUGREGS, &debugregs, "KVM_SET_DEBUGREGS"); !r) {
    return r.takeError();
  }
  if (auto r =
          kvmIoctl(fd_.get(), kKvmSetXsave, const_cast<kvm_xsave*>(&state.xsave), "KVM_SET_XSAVE");
      !r) {
    return r.takeError();
  }
  OneMsr msr(x86::kMsrKernelGsBase);
  msr.entry().data = state.kernel_gs_base;
  auto set = kvmIoctl(fd_.get(), kKvmSetMsrs, msr.msrs(), "KVM_SET_MSRS KERNEL_GS_BASE");
  if (!set) return set.takeError();
  if (*set != 1) return makeError(ErrorKind::kInternal, "KVM_SET_MSRS KERNEL_GS_BASE: refused");
  // Without an in-kernel APIC, KVM_RUN loads CR8 from kvm_run on entry.
  kvmRun().cr8 = state.sregs.cr8;
  kvmRun().s.regs.regs = state.regs;
  return {};
}

Expected<std::unique_ptr<CpuState>> KvmMicroVm::saveCpuState(uint64_t) {
  auto state = std::make_unique<KvmCpuState>();
  if (auto read = readCpuState(*state); !read) return read.takeError();
  return std::unique_ptr<CpuState>(std::move(state));
}

Expected<void> KvmMicroVm::loadCpuState(const CpuState& state) {
  const auto* kvm_state = dynamic_cast<const KvmCpuState*>(&state);
  if (kvm_state == nullptr) {
    return makeError(ErrorKind::kInternal,
                     "KVM vCPU: loadCpuState given a CPU state of another backend");
  }
  return writeCpuState(*kvm_state);
}

Expected<void> KvmMicroVm::armReset(std::span<const uint8_t> snapshot_contents) {
  if (snapshot_contents.size() != memory_.size()) {
    return makeError(ErrorKind::kInternal,
                     fmt::format("KVM armReset: snapshot is {} bytes, guest memory {}",
                                 snapshot_contents.size(), memory_.size()));
  }
  auto state = std::make_unique<KvmCpuState>();
  if (auto read = readCpuState(*state); !read) return read;
  // Start the dirty log from here: what was written before is the snapshot.
  if (auto collected = vm_.collectDirtyPages(guest_dirty_); !collected) return collected;
  guest_dirty_.clear();
  reset_state_ = std::move(state);
  // The dirty log sees every write, so restoring by copy is always cheap.
  page_reset_.emplace(memory_, snapshot_contents, PageReset::Policy{});
  page_reset_->startFromHere();
  return {};
}

Expected<ResetStats> KvmMicroVm::reset() {
  if (!page_reset_)
    return makeError(ErrorKind::kResetFailed, "KVM reset: armReset() was never called");
  const KvmCpuState& state = *reset_state_;
  // KVM finishes a pending `out` on the next KVM_RUN by skipping it, unless
  // rip has moved. If the reset point itself holds that `out`, or anything
  // else is pending, finish it now so the restored state is not touched.
  if (pending_ == Pending::kOther ||
      (pending_ == Pending::kOut && pending_rip_ == state.regs.rip)) {
    if (auto settled = settle("before a reset"); !settled) {
      return makeError(ErrorKind::kResetFailed, settled.error().message);
    }
  }
  pending_ = Pending::kNone;

  if (auto collected = vm_.collectDirtyPages(guest_dirty_); !collected) {
    return collected.takeError();
  }
  // Never drops pages (no copy limit), so nothing is to be tracked again.
  auto stats = page_reset_->restore(guest_dirty_);
  if (!stats) return stats;

  // General, segment and control registers and pending events are applied
  // by the next KVM_RUN (sync regs): no system call here.
  kvm_run& run = kvmRun();
  run.s.regs.regs = state.regs;
  run.s.regs.sregs = state.sregs;
  run.s.regs.events = state.events;
  run.kvm_dirty_regs = kSyncedOnReset;
  run.cr8 = state.sregs.cr8;

  kvm_debugregs debugregs = state.debugregs;
  if (::ioctl(fd_.get(), kKvmSetXsave, &state.xsave) < 0) {
    return makeError(ErrorKind::kResetFailed,
                     fmt::format("KVM_SET_XSAVE on reset: {}", errnoText(errno)));
  }
  if (::ioctl(fd_.get(), KVM_SET_DEBUGREGS, &debugregs) < 0) {
    return makeError(ErrorKind::kResetFailed,
                     fmt::format("KVM_SET_DEBUGREGS on reset: {}", errnoText(errno)));
  }
  return stats;
}

}  // namespace sandpool::vm::kvm
