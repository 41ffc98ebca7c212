// The emulated backend: Unicorn 2 (QEMU's TCG) running the same guest binary
// over the same memory image as KVM. Guest memory is handed to Unicorn with
// uc_mem_map_ptr, so both the emulator and the host see the one mapping and
// its copy-on-write snapshot pages.
//
// Unicorn finishes the current translation block after a hook asks it to
// stop, so port writes are answered inside the hook (a host call is complete
// before the guest's next instruction) and writes after a stop are ignored.
// A code hook's stop takes effect before the hooked instruction runs.
//
// Where Unicorn differs from KVM on privileged instructions and
// non-canonical addresses, code hooks make it fault as KVM does or, where
// Unicorn cannot do what KVM does, fail the call naming the instruction
// (privileged_instructions.h, docs/guest-abi.md "Privileged instructions").
#include <sys/mman.h>
#include <unicorn/unicorn.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "vm/backend.h"
#include "vm/emulated/privileged_instructions.h"
#include "vm/emulated/write_tracker.h"
#include "vm/page_reset.h"
#include "vm/x86.h"

namespace sandpool::vm {

namespace {

// The engine's translation buffer: QEMU's minimum, far more than a guest's
// hot code needs (a warm call runs the same few translated blocks). Unicorn's
// default (1 GiB, advised for transparent huge pages) costs each VM a 2 MiB
// huge page on its first translation; 1 MiB cannot hold one, so each VM keeps
// only the pages it wrote (docs/performance.md, "Density"). Unicorn 2.0 has
// no control for it and keeps its default.
[[maybe_unused]] constexpr uint32_t kTranslationBufferBytes = 1u << 20;

// Pages a VM keeps privately writable between calls and restores by copy;
// past this many, a reset drops the copies and write-protects them again.
constexpr size_t kStickyPageLimit = 64;

Error unicornError(const std::string& step, uc_err err) {
  return makeError(ErrorKind::kInternal, fmt::format("{}: {}", step, uc_strerror(err)));
}

// The lowest non-canonical address: guest memory never reaches it, and
// Unicorn, which runs the guest without paging, truncates such addresses to
// physical ones instead of raising #GP.
constexpr uint64_t kNonCanonicalStart = 1ull << 47;

bool isCanonical(uint64_t address) {
  return address < kNonCanonicalStart || address >= ~(kNonCanonicalStart - 1);
}

constexpr int kGeneralRegisterIds[16] = {
    UC_X86_REG_RAX, UC_X86_REG_RCX, UC_X86_REG_RDX, UC_X86_REG_RBX, UC_X86_REG_RSP, UC_X86_REG_RBP,
    UC_X86_REG_RSI, UC_X86_REG_RDI, UC_X86_REG_R8,  UC_X86_REG_R9,  UC_X86_REG_R10, UC_X86_REG_R11,
    UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15};

uint32_t unicornPerms(uint8_t access) {
  uint32_t perms = UC_PROT_NONE;
  if (access & kAccessRead) perms |= UC_PROT_READ;
  if (access & kAccessWrite) perms |= UC_PROT_WRITE;
  if (access & kAccessExecute) perms |= UC_PROT_EXEC;
  return perms;
}

// Registers that define the guest's execution state and survive between
// engines (a uc_context holds engine pointers, so it cannot).
constexpr int kGeneralRegisters[] = {
    UC_X86_REG_RAX,  UC_X86_REG_RBX, UC_X86_REG_RCX,    UC_X86_REG_RDX,     UC_X86_REG_RSI,
    UC_X86_REG_RDI,  UC_X86_REG_RBP, UC_X86_REG_RSP,    UC_X86_REG_R8,      UC_X86_REG_R9,
    UC_X86_REG_R10,  UC_X86_REG_R11, UC_X86_REG_R12,    UC_X86_REG_R13,     UC_X86_REG_R14,
    UC_X86_REG_R15,  UC_X86_REG_RIP, UC_X86_REG_EFLAGS, UC_X86_REG_FS_BASE, UC_X86_REG_GS_BASE,
    UC_X86_REG_MXCSR};
constexpr size_t kRipIndex = 16;
static_assert(kGeneralRegisters[kRipIndex] == UC_X86_REG_RIP);
constexpr int kTableRegisters[] = {UC_X86_REG_GDTR, UC_X86_REG_IDTR};
constexpr int kSegmentRegisters[] = {UC_X86_REG_CS, UC_X86_REG_SS, UC_X86_REG_DS, UC_X86_REG_ES};
constexpr int kTaskRegister = UC_X86_REG_TR;

struct XmmValue {
  uint64_t lo, hi;
};

class UnicornCpuState final : public CpuState {
 public:
  uint64_t general[std::size(kGeneralRegisters)] = {};
  uc_x86_mmr tables[std::size(kTableRegisters)] = {};
  uint64_t segments[std::size(kSegmentRegisters)] = {};
  uc_x86_mmr task = {};
  XmmValue xmm[16] = {};
};

class UnicornMicroVm final : public MicroVm {
 public:
  // An engine over `memory` (which must outlive the vCPU), its regions
  // mapped per `layout`, the fault and port hooks installed, and registers
  // set to enter `entry` with rdi = boot info and rsp = stack top.
  static Expected<std::unique_ptr<UnicornMicroVm>> create(GuestMemory& memory,
                                                          const MemoryLayout& layout,
                                                          uint64_t entry) {
    std::unique_ptr<UnicornMicroVm> vcpu(new UnicornMicroVm(memory, layout));
    if (auto opened = vcpu->open(entry); !opened) return opened.takeError();
    return vcpu;
  }

  ~UnicornMicroVm() override {
    // Both only free what the engine allocated; nothing is left to act on if they fail.
    if (reset_context_) uc_context_free(reset_context_);
    if (uc_) uc_close(uc_);
  }

  RunExit run(PortHandler& handler) override {
    handler_ = &handler;
    exit_ = RunExit{};
    stopped_ = false;
    std::optional<WriteTracker::Activation> activation;
    if (tracker_) activation.emplace(*tracker_);
    auto start = readUnicornRegister(UC_X86_REG_RIP, "rip");
    if (!start) {
      handler_ = nullptr;
      return RunExit{RunExit::Kind::kHostFailure, {}, start.error().message};
    }
    uc_err err = interrupted_ ? UC_ERR_OK : uc_emu_start(uc_, *start, 0, 0, 0);
    handler_ = nullptr;
    if (interrupted_) {
      exit_ = RunExit{RunExit::Kind::kTimeout, {}, "interrupted"};
    } else if (!stopped_) {
      auto stopped_at = readUnicornRegister(UC_X86_REG_RIP, "rip");
      if (!stopped_at) return RunExit{RunExit::Kind::kHostFailure, {}, stopped_at.error().message};
      const uint64_t rip = *stopped_at;
      exit_.kind = RunExit::Kind::kFault;
      exit_.fault.rip = rip;
      if (err == UC_ERR_INSN_INVALID) {
        exit_.fault.vector = x86::kVectorInvalidOpcode;
        exit_.reason = fmt::format("invalid opcode (vector 6) at rip {}", toHex(rip));
      } else if (err != UC_ERR_OK) {
        exit_.reason = fmt::format("{} at rip {}", uc_strerror(err), toHex(rip));
      } else {
        exit_.reason =
            fmt::format("guest halted (hlt) at rip {} without signalling completion", toHex(rip));
      }
    }
    return exit_;
  }

  void interrupt() noexcept override {
    interrupted_ = true;
    // Fails only where no emulation is running: run() looks at interrupted_
    // before it starts one, and the watchdog repeats the interrupt.
    if (uc_emu_stop(uc_) != UC_ERR_OK) return;
  }

  void clearInterrupt() noexcept override { interrupted_ = false; }

  Expected<uint64_t> readRegister(Register reg) override {
    switch (reg) {
      case Register::kRip: return readUnicornRegister(UC_X86_REG_RIP, "rip");
      case Register::kRsi: return readUnicornRegister(UC_X86_REG_RSI, "rsi");
      case Register::kRdi: return readUnicornRegister(UC_X86_REG_RDI, "rdi");
      case Register::kR8: return readUnicornRegister(UC_X86_REG_R8, "r8");
    }
    return makeError(ErrorKind::kInternal, "emulated vCPU: unknown register");
  }

  Expected<std::unique_ptr<CpuState>> saveCpuState(uint64_t resume_rip) override {
    auto state = std::make_unique<UnicornCpuState>();
    const auto read = [this](int id, void* value, const std::string& what) -> Expected<void> {
      if (uc_err err = uc_reg_read(uc_, id, value); err != UC_ERR_OK)
        return unicornError(fmt::format("saving {}", what), err);
      return {};
    };
    for (size_t i = 0; i < std::size(kGeneralRegisters); i++) {
      if (auto r =
              read(kGeneralRegisters[i], &state->general[i], fmt::format("general register {}", i));
          !r) {
        return r.takeError();
      }
    }
    for (size_t i = 0; i < std::size(kTableRegisters); i++) {
      if (auto r = read(kTableRegisters[i], &state->tables[i], "a descriptor table register"); !r)
        return r.takeError();
    }
    for (size_t i = 0; i < std::size(kSegmentRegisters); i++) {
      if (auto r = read(kSegmentRegisters[i], &state->segments[i],
                        fmt::format("segment register {}", i));
          !r) {
        return r.takeError();
      }
    }
    if (auto r = read(kTaskRegister, &state->task, "the task register"); !r) return r.takeError();
    for (int i = 0; i < 16; i++) {
      if (auto r = read(UC_X86_REG_XMM0 + i, &state->xmm[i], fmt::format("xmm{}", i)); !r)
        return r.takeError();
    }
    // Inside an instruction hook Unicorn's RIP is the start of the current
    // translation block, not the `out`: the caller names where to resume.
    state->general[kRipIndex] = resume_rip;
    return std::unique_ptr<CpuState>(std::move(state));
  }

  Expected<void> loadCpuState(const CpuState& generic) override {
    const auto* state = dynamic_cast<const UnicornCpuState*>(&generic);
    if (!state)
      return makeError(ErrorKind::kInternal, "CPU state is not from the emulated backend");
    // Descriptor tables first: loading a segment selector reads the GDT.
    for (size_t i = 0; i < std::size(kTableRegisters); i++) {
      if (uc_err err = uc_reg_write(uc_, kTableRegisters[i], &state->tables[i]); err != UC_ERR_OK) {
        return unicornError("restoring a descriptor table register", err);
      }
    }
    for (size_t i = 0; i < std::size(kSegmentRegisters); i++) {
      if (uc_err err = uc_reg_write(uc_, kSegmentRegisters[i], &state->segments[i]);
          err != UC_ERR_OK) {
        return unicornError(fmt::format("restoring segment register {}", i), err);
      }
    }
    if (uc_err err = uc_reg_write(uc_, kTaskRegister, &state->task); err != UC_ERR_OK) {
      return unicornError("restoring the task register", err);
    }
    for (size_t i = 0; i < std::size(kGeneralRegisters); i++) {
      if (uc_err err = uc_reg_write(uc_, kGeneralRegisters[i], &state->general[i]);
          err != UC_ERR_OK) {
        return unicornError(fmt::format("restoring general register {}", i), err);
      }
    }
    for (int i = 0; i < 16; i++) {
      if (uc_err err = uc_reg_write(uc_, UC_X86_REG_XMM0 + i, &state->xmm[i]); err != UC_ERR_OK) {
        return unicornError(fmt::format("restoring xmm{}", i), err);
      }
    }
    return {};
  }

  Expected<void> armReset(std::span<const uint8_t> snapshot_contents) override {
    if (uc_err err = uc_context_alloc(uc_, &reset_context_); err != UC_ERR_OK) {
      return unicornError("uc_context_alloc", err);
    }
    if (uc_err err = uc_context_save(uc_, reset_context_); err != UC_ERR_OK) {
      return unicornError("uc_context_save", err);
    }
    auto tracker = WriteTracker::create(memory_.hostBase(), layout_);
    if (!tracker) return tracker.takeError();
    tracker_ = std::move(*tracker);
    // Pages restored by copy stay writable, unseen by the tracker.
    page_reset_.emplace(
        memory_, snapshot_contents,
        PageReset::Policy{.copy_limit = kStickyPageLimit, .sees_writes_to_copied_pages = false});
    return tracker_->protectAll();
  }

  Expected<ResetStats> reset() override {
    if (!tracker_) return makeError(ErrorKind::kResetFailed, "reset before armReset");
    if (tracker_->trackingLost()) {
      return makeError(ErrorKind::kHostLimit,
                       "a guest write could not be tracked (the process's memory mappings "
                       "reached vm.max_map_count); the VM cannot be reset");
    }
    auto stats = page_reset_->restore(tracker_->dirty());
    if (!stats) return stats;
    if (auto tracked = tracker_->protect(page_reset_->dropped()); !tracked)
      return tracked.takeError();
    if (uc_err err = uc_context_restore(uc_, reset_context_); err != UC_ERR_OK) {
      return makeError(ErrorKind::kResetFailed,
                       std::string("uc_context_restore: ") + uc_strerror(err));
    }
    return stats;
  }

 private:
  UnicornMicroVm(GuestMemory& memory, const MemoryLayout& layout)
      : memory_(memory), layout_(layout) {}

  Expected<void> open(uint64_t entry) {
    if (uc_err err = uc_open(UC_ARCH_X86, UC_MODE_64, &uc_); err != UC_ERR_OK) {
      uc_ = nullptr;
      return unicornError("uc_open", err);
    }
#if UC_API_MAJOR > 2 || (UC_API_MAJOR == 2 && UC_API_MINOR >= 1)
    // Read when the engine initialises, on its first use below.
    if (uc_err err = uc_ctl_set_tcg_buffer_size(uc_, kTranslationBufferBytes); err != UC_ERR_OK)
      return unicornError("sizing the translation buffer", err);
#endif
    // A fixed exit address (page 0, never mapped, never executed): without
    // it every uc_emu_start() re-translates code around its `until` address.
    uint64_t exits[] = {0};
    if (uc_err err = uc_ctl_exits_enable(uc_); err != UC_ERR_OK)
      return unicornError("enabling exits", err);
    if (uc_err err = uc_ctl_set_exits(uc_, exits, 1); err != UC_ERR_OK)
      return unicornError("setting exits", err);
    // Adjacent regions with the same access go to Unicorn as one mapping:
    // its store slow path searches the mappings linearly.
    const auto& regions = layout_.regions;
    for (size_t i = 0; i < regions.size();) {
      size_t j = i + 1;
      while (j < regions.size() && regions[j].start == regions[j - 1].end() &&
             regions[j].access == regions[i].access) {
        j++;
      }
      const uint64_t start = regions[i].start, size = regions[j - 1].end() - start;
      uc_err err = uc_mem_map_ptr(uc_, start, size, unicornPerms(regions[i].access),
                                  memory_.hostBase() + start);
      if (err != UC_ERR_OK)
        return unicornError(fmt::format("mapping guest region '{}'", regions[i].name), err);
      i = j;
    }
    uc_hook hook;
    const std::pair<void*, int> instruction_hooks[] = {
        {reinterpret_cast<void*>(&onOut), UC_X86_INS_OUT},
        {reinterpret_cast<void*>(&onIn), UC_X86_INS_IN},
        {reinterpret_cast<void*>(&onSyscall), UC_X86_INS_SYSCALL},
        {reinterpret_cast<void*>(&onSyscall), UC_X86_INS_SYSENTER},
    };
    for (const auto& [callback, instruction] : instruction_hooks) {
      if (uc_err err = uc_hook_add(uc_, &hook, UC_HOOK_INSN, callback, this, 1, 0, instruction);
          err != UC_ERR_OK) {
        return unicornError("adding an instruction hook", err);
      }
    }
    if (uc_err err = uc_hook_add(uc_, &hook, UC_HOOK_MEM_INVALID,
                                 reinterpret_cast<void*>(&onBadAccess), this, 1, 0);
        err != UC_ERR_OK) {
      return unicornError("adding the memory fault hook", err);
    }
    if (uc_err err = uc_hook_add(uc_, &hook, UC_HOOK_INTR, reinterpret_cast<void*>(&onInterrupt),
                                 this, 1, 0);
        err != UC_ERR_OK) {
      return unicornError("adding the interrupt hook", err);
    }
    // Code at a non-canonical address runs only where Unicorn's truncation
    // aliased it to guest memory; KVM raises #GP there.
    if (uc_err err =
            uc_hook_add(uc_, &hook, UC_HOOK_CODE, reinterpret_cast<void*>(&onNonCanonicalCode),
                        this, kNonCanonicalStart, ~(kNonCanonicalStart - 1) - 1);
        err != UC_ERR_OK) {
      return unicornError("adding the non-canonical code hook", err);
    }
    for (const CodeRange& range : findPrivilegedCandidates(
             std::span<const uint8_t>(memory_.hostBase(), memory_.size()), layout_)) {
      if (uc_err err =
              uc_hook_add(uc_, &hook, UC_HOOK_CODE, reinterpret_cast<void*>(&onPrivilegedCandidate),
                          this, range.first, range.last);
          err != UC_ERR_OK) {
        return unicornError(
            fmt::format("adding a privileged-instruction hook at {}", toHex(range.first)), err);
      }
    }
    const uint64_t boot_regs[] = {entry, layout_.stack_top, layout_.boot_info_addr};
    const int boot_ids[] = {UC_X86_REG_RIP, UC_X86_REG_RSP, UC_X86_REG_RDI};
    for (size_t i = 0; i < std::size(boot_ids); i++) {
      if (uc_err err = uc_reg_write(uc_, boot_ids[i], &boot_regs[i]); err != UC_ERR_OK) {
        return unicornError("setting the entry registers", err);
      }
    }
    return {};
  }

  Expected<uint64_t> readUnicornRegister(int id, std::string_view name) {
    uint64_t value = 0;
    if (uc_err err = uc_reg_read(uc_, id, &value); err != UC_ERR_OK) {
      return unicornError(fmt::format("reading {}", name), err);
    }
    return value;
  }

  // Inside a hook: ends the run (and stops the emulation) with `exit`,
  // unless an earlier hook already ended it.
  void stopWith(RunExit exit) {
    if (stopped_) return;
    exit_ = std::move(exit);
    stopEmulation();
  }

  // Inside a hook: ends the run with exit_ as it is.
  void stopEmulation() {
    stopped_ = true;
    if (uc_err err = uc_emu_stop(uc_); err != UC_ERR_OK) {
      exit_ = RunExit{RunExit::Kind::kHostFailure, {}, unicornError("uc_emu_stop", err).message};
    }
  }

  // Inside a hook: an engine call failed; the run ends as a host failure.
  void stopWithHostFailure(const Error& error) {
    stopWith(RunExit{RunExit::Kind::kHostFailure, {}, error.message});
  }

  void stopWithFault(uint32_t vector, uint64_t address, uint64_t error_code, std::string reason) {
    auto rip = readRegister(Register::kRip);
    if (!rip) return stopWithHostFailure(rip.error());
    stopWith(RunExit{RunExit::Kind::kFault, FaultInfo{vector, error_code, address, *rip},
                     std::move(reason)});
  }

  static void onOut(uc_engine*, uint32_t port, int, uint32_t value, void* self_ptr) {
    auto* self = static_cast<UnicornMicroVm*>(self_ptr);
    if (self->stopped_ || self->interrupted_) return;
    // exit_ is kStopped from the start of run().
    if (self->handler_->onPortOut(static_cast<uint16_t>(port), value) == PortAction::kStop)
      self->stopEmulation();
  }

  static uint32_t onIn(uc_engine*, uint32_t port, int, void* self_ptr) {
    auto* self = static_cast<UnicornMicroVm*>(self_ptr);
    self->stopWithFault(x86::kVectorGeneralProtection, 0, 0,
                        fmt::format("guest read from I/O port {}", toHex(port)));
    return 0;
  }

  static void onSyscall(uc_engine*, void* self_ptr) {
    auto* self = static_cast<UnicornMicroVm*>(self_ptr);
    self->stopWithFault(x86::kVectorInvalidOpcode, 0, 0, "guest executed syscall/sysenter");
  }

  static void onInterrupt(uc_engine*, uint32_t vector, void* self_ptr) {
    auto* self = static_cast<UnicornMicroVm*>(self_ptr);
    auto rip = self->readRegister(Register::kRip);
    if (!rip) return self->stopWithHostFailure(rip.error());
    self->stopWithFault(vector, 0, 0, describeFault(FaultInfo{vector, 0, 0, *rip}));
  }

  // #GP(0) at rip, as KVM reports it: error code 0.
  void generalProtectionFault(uint64_t rip, const std::string& why) {
    FaultInfo fault{x86::kVectorGeneralProtection, 0, 0, rip};
    stopWithFault(x86::kVectorGeneralProtection, 0, 0,
                  fmt::format("{}: {}", describeFault(fault), why));
  }

  static void onNonCanonicalCode(uc_engine*, uint64_t address, uint32_t, void* self_ptr) {
    auto* self = static_cast<UnicornMicroVm*>(self_ptr);
    self->generalProtectionFault(
        address, fmt::format("execution at non-canonical address {}", toHex(address)));
  }

  static void onPrivilegedCandidate(uc_engine*, uint64_t address, uint32_t size, void* self_ptr) {
    auto* self = static_cast<UnicornMicroVm*>(self_ptr);
    // An x86 instruction is at most 15 bytes; Unicorn may pass a placeholder size.
    auto instruction = decodePrivileged(
        std::span<const uint8_t>(self->memory_.hostBase() + address, std::min<uint32_t>(size, 15)));
    if (instruction) self->checkPrivileged(address, *instruction);
  }

  void checkPrivileged(uint64_t rip, const PrivilegedInstruction& instruction) {
    using Kind = PrivilegedInstruction::Kind;
    if (instruction.kind != Kind::kMovToControlRegister) {
      // KVM's MSR filter lets the guest reach only the segment bases.
      auto rcx = readUnicornRegister(UC_X86_REG_RCX, "rcx");
      if (!rcx) return stopWithHostFailure(rcx.error());
      const uint64_t index = *rcx & 0xffffffff;
      if (index == x86::kMsrFsBase || index == x86::kMsrGsBase) return;
      generalProtectionFault(
          rip, fmt::format("{} of MSR {}, which guests may not access",
                           instruction.kind == Kind::kWrmsr ? "wrmsr" : "rdmsr", toHex(index)));
      return;
    }
    const uint8_t cr = instruction.control_register;
    if (cr != 0 && cr != 3 && cr != 4) return;
    auto source = readUnicornRegister(kGeneralRegisterIds[instruction.source_register],
                                      "the source register");
    if (!source) return stopWithHostFailure(source.error());
    const uint64_t value = *source;
    if (cr == 0 && !(value & x86::kCr0Pg)) {
      generalProtectionFault(
          rip,
          fmt::format("mov to cr0 of {} clears CR0.PG, which would leave long mode", toHex(value)));
      return;
    }
    // Unicorn runs the guest without paging: what such a write changes on
    // KVM (page tables, write protection, paging features) cannot happen here.
    stopWithFault(x86::kVectorInvalidOpcode, 0, 0,
                  fmt::format("mov to cr{} of {} at rip {}: the emulated backend does not emulate "
                              "control-register writes (it runs guests without paging)",
                              cr, toHex(value), toHex(rip)));
  }

  static bool onBadAccess(uc_engine*, uc_mem_type type, uint64_t address, int, int64_t,
                          void* self_ptr) {
    auto* self = static_cast<UnicornMicroVm*>(self_ptr);
    const bool fetch = type == UC_MEM_FETCH_UNMAPPED || type == UC_MEM_FETCH_PROT;
    auto at = self->readRegister(Register::kRip);
    if (!at) {
      self->stopWithHostFailure(at.error());
      return false;
    }
    const uint64_t rip = *at;
    if (fetch && rip >= kNonCanonicalStart) {
      // Unicorn reports the truncated physical address; the guest jumped to rip.
      if (!isCanonical(rip)) {
        self->generalProtectionFault(
            rip, fmt::format("execution at non-canonical address {}", toHex(rip)));
        return false;
      }
      address = rip;
    }
    uint64_t code = 0;
    const char* what = "access";
    switch (type) {
      case UC_MEM_READ_UNMAPPED: what = "read of unmapped"; break;
      case UC_MEM_WRITE_UNMAPPED:
        what = "write to unmapped";
        code = x86::kPfWrite;
        break;
      case UC_MEM_FETCH_UNMAPPED:
        what = "execution of unmapped";
        code = x86::kPfFetch;
        break;
      case UC_MEM_WRITE_PROT:
        what = "write to read-only";
        code = x86::kPfPresent | x86::kPfWrite;
        break;
      case UC_MEM_READ_PROT:
        what = "read of protected";
        code = x86::kPfPresent;
        break;
      case UC_MEM_FETCH_PROT:
        what = "execution of non-executable";
        code = x86::kPfPresent | x86::kPfFetch;
        break;
      default: break;
    }
    self->stopWithFault(x86::kVectorPageFault, address, code,
                        fmt::format("page fault (vector 14): {} address {} at rip {}", what,
                                    toHex(address), toHex(rip)));
    return false;
  }

  GuestMemory& memory_;
  const MemoryLayout& layout_;
  uc_engine* uc_ = nullptr;
  uc_context* reset_context_ = nullptr;
  std::unique_ptr<WriteTracker> tracker_;
  std::optional<PageReset> page_reset_;

  PortHandler* handler_ = nullptr;
  RunExit exit_;
  bool stopped_ = false;
  std::atomic<bool> interrupted_{false};
};

class UnicornBackend final : public Backend {
 public:
  BackendKind kind() const override { return BackendKind::kEmulated; }

  Expected<void> prepareImage(std::span<uint8_t>, const MemoryLayout&) override { return {}; }

  Expected<std::unique_ptr<MicroVm>> createMicroVm(GuestMemory& memory, const MemoryLayout& layout,
                                                   uint64_t entry) override {
    auto vcpu = UnicornMicroVm::create(memory, layout, entry);
    if (!vcpu) return vcpu.takeError();
    return std::unique_ptr<MicroVm>(std::move(*vcpu));
  }
};

}  // namespace

std::unique_ptr<Backend> makeEmulatedBackend() { return std::make_unique<UnicornBackend>(); }

}  // namespace sandpool::vm
