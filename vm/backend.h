// The one interface the two backends (kvm, emulated) implement: a micro-VM
// (memory slot, vCPU, reset) over guest memory. Everything else (ELF loading, layout, snapshots,
// the ABI, host calls, errors, timeouts) is shared code above it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "vm/error.h"
#include "vm/guest_memory.h"
#include "vm/layout.h"
#include "vm/watchdog.h"

namespace sandpool::vm {

enum class BackendKind { kKvm, kEmulated };
std::string_view backendKindName(BackendKind kind);

// What the shared code tells a backend after a port write.
enum class PortAction { kResume, kStop };

// Called by MicroVm::run() on the thread running it, for every `out` the guest
// executes. By the time it returns kResume the guest continues after the
// instruction; kStop ends run() with RunExit::kStopped.
class PortHandler {
 public:
  virtual PortAction onPortOut(uint16_t port, uint32_t value) = 0;

 protected:
  ~PortHandler() = default;
};

struct RunExit {
  enum class Kind {
    kStopped,      // the port handler said stop
    kFault,        // exception, unmapped/forbidden access, triple fault, hlt, MMIO
    kTimeout,      // interrupt() was called
    kHostFailure,  // the backend itself failed (an emulator call): `reason` says which
  };
  Kind kind = Kind::kStopped;
  FaultInfo fault;  // for kFault
  std::string
      reason;  // for kFault and kHostFailure: what the backend saw, e.g. "write to unmapped 0x0"
};

// The registers the shared code reads: rip for messages, rsi/rdi/r8 for the
// ABORT, FAULT and READY reports (abi.h).
enum class Register { kRip, kRsi, kRdi, kR8 };

// Backend-specific frozen CPU state (registers, segments, FPU/SSE).
class CpuState {
 public:
  virtual ~CpuState() = default;
};

// Statistics of one reset, for benchmarks and metrics.
struct ResetStats {
  uint64_t pages_restored = 0;
};

// One micro-VM: the backend's hold on its guest memory (KVM's memory slot,
// Unicorn's mappings), its one vCPU, and its reset to the snapshot point.
// Not thread-safe except interrupt().
class MicroVm {
 public:
  virtual ~MicroVm() = default;

  // Runs the guest until the port handler stops it, it faults, or
  // interrupt() is called. Port writes are delivered to `handler` inside.
  virtual RunExit run(PortHandler& handler) = 0;
  // Any thread: makes the current or next run() return kTimeout promptly.
  virtual void interrupt() noexcept = 0;
  // Clears a pending interrupt() before a new run().
  virtual void clearInterrupt() noexcept = 0;

  // Valid inside PortHandler::onPortOut and after run() returns.
  virtual Expected<uint64_t> readRegister(Register reg) = 0;
  // Inside onPortOut: the CPU state as it will be once the `out` completes,
  // resuming at `resume_rip`, the address after the `out` as the guest
  // names it (the shared code knows where: READY's rsi, abi.h). A backend
  // that cannot tell that address inside its port hook (Unicorn) resumes
  // there; KVM completes the `out` itself and resumes after it.
  virtual Expected<std::unique_ptr<CpuState>> saveCpuState(uint64_t resume_rip) = 0;
  virtual Expected<void> loadCpuState(const CpuState& state) = 0;

  // Makes the current CPU state and memory contents (the snapshot) the point
  // reset() returns to, and starts tracking dirty pages from here.
  virtual Expected<void> armReset(std::span<const uint8_t> snapshot_contents) = 0;
  // Restores CPU state and every page dirtied since armReset() or the last
  // reset(), by guest or host. Cost grows with dirty pages, not memory size.
  virtual Expected<ResetStats> reset() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual BackendKind kind() const = 0;

  // Writes what this backend needs into a fresh memory image before boot
  // (page tables on KVM). `image` is the whole guest memory.
  virtual Expected<void> prepareImage(std::span<uint8_t> image, const MemoryLayout& layout) = 0;
  // A micro-VM over `memory`, regions mapped per `layout`, registers set to
  // enter `entry` with rdi = boot info and rsp = stack top.
  virtual Expected<std::unique_ptr<MicroVm>> createMicroVm(GuestMemory& memory,
                                                           const MemoryLayout& layout,
                                                           uint64_t entry) = 0;
  // What was checked when the backend was opened, for the start-up log line
  // (the KVM self-test's findings); empty where nothing was.
  virtual std::string openingReport() const { return {}; }

  // The watchdog that stops the calls and boots of this backend's vCPUs
  // past their deadlines. Each backend has its own thread and slots; a
  // Sandbox or Snapshot must not outlive the backend it was made with.
  Watchdog& watchdog() { return watchdog_; }

 private:
  Watchdog watchdog_;
};

// How the KVM backend is opened.
struct KvmOptions {
  // Accept a KVM whose guest code runs far below hardware speed (the
  // self-test's speed check, vm/kvm/self_test.h) and say so in the opening
  // report, instead of refusing it. For KVM under software emulation, such as
  // the test suite's KVM inside QEMU, where correctness is what is tested.
  bool waive_speed_check = false;

  // SANDPOOL_KVM_SPEED_CHECK=waive sets waive_speed_check: how test and
  // benchmark programs are told (sandpoold and sandpool-run take the flag
  // --kvm-speed-check=waive instead).
  static KvmOptions fromEnvironment();
};
// The flag's value: "require" (the default) or "waive".
bool parseKvmSpeedCheck(std::string_view text, KvmOptions& options);

// --backend=auto|kvm|emulated. `auto` picks KVM when /dev/kvm opens and
// passes its self-test; `chosen_because` says which one was picked and why,
// for the log.
enum class BackendChoice { kAuto, kKvm, kEmulated };
bool parseBackendChoice(std::string_view text, BackendChoice& choice);
Expected<std::unique_ptr<Backend>> openBackend(BackendChoice choice, std::string& chosen_because,
                                               const KvmOptions& kvm_options = {});

std::unique_ptr<Backend> makeEmulatedBackend();
// Opens /dev/kvm, checks its API and capabilities and runs the self-test
// (vm/kvm/self_test.h); a kBackendUnavailable error saying which failed.
Expected<std::unique_ptr<Backend>> makeKvmBackend(const KvmOptions& options = {});

}  // namespace sandpool::vm
