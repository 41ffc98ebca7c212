// The privileged instructions Unicorn 2.1 gets wrong, found so that the
// emulated backend can make them behave as on KVM: Unicorn lets `rdmsr` and
// `wrmsr` of any MSR through (KVM's MSR filter raises #GP), and it runs the
// guest without paging, so writes to CR0, CR3 and CR4 change nothing there
// (on KVM they change the guest's paging).
//
// Unicorn cannot hook these instructions by kind, but a code hook limited to
// an address range costs nothing outside it. Code is read+execute and never
// writable (W^X), so the places where such an instruction can start are known
// from the image alone: every `0F 30` (wrmsr), `0F 32` (rdmsr) and `0F 22`
// (mov to a control register) byte pair in an executable region, and the
// prefix bytes before it. findPrivilegedCandidates() lists those ranges;
// decodePrivileged() tells, when an instruction in one is about to run,
// whether it really is one (the bytes may be part of another instruction).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vm/layout.h"

namespace sandpool::vm {

struct PrivilegedInstruction {
  enum class Kind { kWrmsr, kRdmsr, kMovToControlRegister };
  Kind kind;
  uint8_t control_register = 0;  // mov to crN: N
  uint8_t source_register = 0;   // mov to crN: the general register, 0 = rax ... 15 = r15
};

// The instruction starting at code[0], if it is one of the three kinds.
// `code` holds the bytes from there to at most the end of the instruction's
// region (15 bytes are enough).
std::optional<PrivilegedInstruction> decodePrivileged(std::span<const uint8_t> code);

// Guest address ranges [first, last] in which such an instruction could
// start, sorted and disjoint. `memory` is guest memory from address 0.
struct CodeRange {
  uint64_t first, last;
};
std::vector<CodeRange> findPrivilegedCandidates(std::span<const uint8_t> memory,
                                                const MemoryLayout& layout);

}  // namespace sandpool::vm
