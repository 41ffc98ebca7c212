#include "vm/emulated/privileged_instructions.h"

#include <algorithm>

namespace sandpool::vm {

namespace {

// An x86 instruction is at most 15 bytes; the shortest of ours (0F 30) may
// carry 13 prefix bytes before it.
constexpr uint64_t kMaxPrefixBytes = 13;

bool isLegacyPrefix(uint8_t byte) {
  switch (byte) {
    case 0xf0:
    case 0xf2:
    case 0xf3:  // lock, repne, rep
    case 0x2e:
    case 0x36:
    case 0x3e:
    case 0x26:
    case 0x64:
    case 0x65:  // segments
    case 0x66:
    case 0x67:  // operand, address size
      return true;
    default: return false;
  }
}

bool isPrivilegedOpcode(uint8_t second) {
  return second == 0x30 || second == 0x32 || second == 0x22;
}

}  // namespace

std::optional<PrivilegedInstruction> decodePrivileged(std::span<const uint8_t> code) {
  // Prefixes in any order; a REX prefix counts only right before the opcode
  // (elsewhere the CPU, and Unicorn, ignore it, but the instruction runs).
  size_t at = 0;
  uint8_t rex = 0;
  while (at < code.size() && at <= kMaxPrefixBytes) {
    if ((code[at] & 0xf0) == 0x40) {
      rex = code[at];
    } else if (isLegacyPrefix(code[at])) {
      rex = 0;
    } else {
      break;
    }
    at++;
  }
  if (at + 1 >= code.size() || code[at] != 0x0f) return std::nullopt;
  switch (code[at + 1]) {
    case 0x30: return PrivilegedInstruction{PrivilegedInstruction::Kind::kWrmsr};
    case 0x32: return PrivilegedInstruction{PrivilegedInstruction::Kind::kRdmsr};
    case 0x22: {
      if (at + 2 >= code.size()) return std::nullopt;
      // mov crN, reg: ModRM reg field (and REX.R) is N, the r/m field (and
      // REX.B) the source; the mod field is ignored.
      const uint8_t modrm = code[at + 2];
      PrivilegedInstruction mov{PrivilegedInstruction::Kind::kMovToControlRegister};
      mov.control_register = static_cast<uint8_t>(((modrm >> 3) & 7) | (rex & 4 ? 8 : 0));
      mov.source_register = static_cast<uint8_t>((modrm & 7) | (rex & 1 ? 8 : 0));
      return mov;
    }
    default: return std::nullopt;
  }
}

std::vector<CodeRange> findPrivilegedCandidates(std::span<const uint8_t> memory,
                                                const MemoryLayout& layout) {
  std::vector<CodeRange> ranges;
  for (const Region& region : layout.regions) {
    if (!(region.access & kAccessExecute) || region.end() > memory.size()) continue;
    for (uint64_t at = region.start; at + 1 < region.end(); at++) {
      if (memory[at] != 0x0f || !isPrivilegedOpcode(memory[at + 1])) continue;
      const uint64_t first =
          std::max(region.start, at > kMaxPrefixBytes ? at - kMaxPrefixBytes : 0);
      if (!ranges.empty() && first <= ranges.back().last + 1) {
        ranges.back().last = at;
      } else {
        ranges.push_back({first, at});
      }
    }
  }
  return ranges;
}

}  // namespace sandpool::vm
