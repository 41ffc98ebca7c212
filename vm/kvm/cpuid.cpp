#include "vm/kvm/cpuid.h"

#include <algorithm>

#include "vm/x86.h"

namespace sandpool::vm::kvm {

void filterCpuid(std::vector<kvm_cpuid_entry2>& entries) {
  // Leaf 0xd describes XSAVE state components; it means nothing without XSAVE.
  std::erase_if(entries, [](const kvm_cpuid_entry2& e) { return e.function == 0xd; });
  for (kvm_cpuid_entry2& e : entries) {
    switch (e.function) {
      case 0x1: e.ecx &= ~x86::cpuid::kLeaf1EcxHidden; break;
      case 0x7:
        if (e.index == 0) {
          e.ebx &= ~x86::cpuid::kLeaf7EbxAvx;
          e.ecx &= ~x86::cpuid::kLeaf7EcxAvx;
          e.edx &= ~x86::cpuid::kLeaf7EdxAvx;
        } else if (e.index == 1) {
          e.eax &= ~x86::cpuid::kLeaf7Sub1EaxAvx;
        }
        break;
      case 0x80000001: e.ecx &= ~x86::cpuid::kSvm; break;
      default: break;
    }
  }
}

std::vector<std::string> hiddenFeaturesSeen(uint32_t leaf1_ecx, uint32_t leaf7_ebx) {
  struct Feature {
    uint32_t leaf1_ecx;
    uint32_t leaf7_ebx;
    const char* name;
  };
  static constexpr Feature kHidden[] = {
      {x86::cpuid::kVmx, 0, "VMX"},
      {x86::cpuid::kFma, 0, "FMA"},
      {x86::cpuid::kXsave, 0, "XSAVE"},
      {x86::cpuid::kOsxsave, 0, "OSXSAVE"},
      {x86::cpuid::kAvx, 0, "AVX"},
      {x86::cpuid::kF16c, 0, "F16C"},
      {0, x86::cpuid::kLeaf7EbxAvx2, "AVX2"},
      {0, x86::cpuid::kLeaf7EbxAvx & ~x86::cpuid::kLeaf7EbxAvx2, "AVX-512"},
  };
  std::vector<std::string> seen;
  for (const Feature& f : kHidden) {
    if ((leaf1_ecx & f.leaf1_ecx) != 0 || (leaf7_ebx & f.leaf7_ebx) != 0) seen.emplace_back(f.name);
  }
  return seen;
}

}  // namespace sandpool::vm::kvm
