// Hand-written guests for the KVM-specific tests: machine code that drives
// the vCPU directly, below the guest SDK, so a test can aim at one exit, one
// page-table entry or one piece of CPU state.
//
// Memory (8 MiB): boot info page (R) at 0x1000, page tables in the host area,
// code (R+X) at 0x400000 (program) and 0x401000 (exception stubs), data
// (R+W+NX) 0x600000..0x700000 with the guest's GDT/IDT in it, stack (R+W+NX)
// 0x7f0000..0x800000. Everything else is unmapped.
//
// The dispatcher program signals READY (0x5500), then on every call reads a
// command and an argument the host wrote at kInputAddr and runs it:
// progress/report values go out on 0x5502, the result on DONE (0x5501),
// exceptions through the stubs on FAULT (0x5504: eax vector, rsi error code,
// rdi cr2, r8 rip).
#pragma once

#include <sandpool/abi.h>

#include <cstdint>
#include <memory>
#include <span>

#include "vm/backend.h"
#include "vm/guest_memory.h"
#include "vm/layout.h"
#include "vm/mapping.h"
#include "vm/unique_fd.h"

namespace sandpool::vm::kvm::test {

inline constexpr uint64_t kMemorySize = 8ull << 20;
inline constexpr uint64_t kProgramAddr = 0x400000;
inline constexpr uint64_t kStubsAddr = 0x401000;
inline constexpr uint64_t kDataAddr = 0x600000;
inline constexpr uint64_t kDataSize = 0x100000;
inline constexpr uint64_t kCounterAddr = 0x600000;
inline constexpr uint64_t kInputAddr = 0x601000;  // command, argument
inline constexpr uint64_t kHostValueAddr = 0x601010;
inline constexpr uint64_t kSpinCounterAddr = 0x602000;  // cmdSpin counts here
inline constexpr uint64_t kDirtyBase = 0x610000;        // cmdDirtyPages writes from here
inline constexpr uint64_t kStackAddr = 0x7f0000;
inline constexpr uint64_t kStackTop = 0x800000;

inline constexpr uint16_t kPortReady = SANDPOOL_PORT_READY;
inline constexpr uint16_t kPortDone = SANDPOOL_PORT_DONE;
inline constexpr uint16_t kPortReport = SANDPOOL_PORT_HOST_CALL;
inline constexpr uint16_t kPortFault = SANDPOOL_PORT_FAULT;

enum Command : uint64_t {
  kCmdCounter = 0,       // ++counter, DONE(counter)
  kCmdHostValue = 1,     // DONE(qword at kHostValueAddr)
  kCmdSpin = 2,          // report once, then count at kSpinCounterAddr forever
  kCmdRead = 3,          // read a qword at arg
  kCmdWrite = 4,         // write a byte at arg
  kCmdExecute = 5,       // jump to arg
  kCmdRdmsr = 6,         // report(rdmsr(arg)) then DONE
  kCmdWriteFsBase = 7,   // wrmsr FS_BASE = arg, report(rdmsr FS_BASE), DONE
  kCmdFpu = 8,           // report mxcsr, report xmm5 low, then change both, DONE
  kCmdDebugRegs = 9,     // report dr0 and dr7, write both (no breakpoint enabled), DONE
  kCmdCpuid = 10,        // report cpuid(1).ecx, cpuid(0x80000001).ecx, cpuid(7).ebx, DONE
  kCmdHalt = 11,         // hlt
  kCmdTripleFault = 12,  // load an empty IDT, then ud2
  kCmdDirtyPages = 13,   // write one qword into each of arg pages from kDirtyBase, DONE
  kCmdReports = 14,      // report arg times (one exit each), DONE
  kCmdIn = 15,           // in eax, dx from the READY port
};

enum class Program { kDispatcher, kBackToBackOut };

// The memfd holding the image of one program, and a read-only view of it as
// the snapshot contents reset() restores from.
class RawImage {
 public:
  static Expected<std::unique_ptr<RawImage>> build(Backend& backend, Program program);
  const MemoryLayout& layout() const { return layout_; }
  int memfd() const { return memfd_.get(); }
  std::span<const uint8_t> contents() const { return contents_.bytes(); }

 private:
  MemoryLayout layout_;
  UniqueFd memfd_;
  Mapping contents_;
};

// A micro-VM over a RawImage: booted to READY, reset armed there.
class RawVm {
 public:
  static Expected<std::unique_ptr<RawVm>> boot(Backend& backend, const RawImage& image);

  GuestMemory& memory() { return memory_; }
  MicroVm& vcpu() { return *vcpu_; }
  // Writes the command and argument into the input page (a host write).
  Expected<void> setInput(uint64_t command, uint64_t argument);

 private:
  explicit RawVm(GuestMemory memory) : memory_(std::move(memory)) {}
  GuestMemory memory_;
  std::unique_ptr<MicroVm> vcpu_;
};

}  // namespace sandpool::vm::kvm::test
