#include "vm/kvm/cpuid.h"

#include <algorithm>

#include "vm/kvm/x86.h"

namespace sandpool::vm::kvm {

void filterCpuid(std::vector<kvm_cpuid_entry2>& entries) {
  // Leaf 0xd describes XSAVE state components; it means nothing without XSAVE.
  std::erase_if(entries, [](const kvm_cpuid_entry2& e) { return e.function == 0xd; });
  for (kvm_cpuid_entry2& e : entries) {
    switch (e.function) {
      case 0x1:
        e.ecx &= ~(x86::cpuid::kVmx | x86::cpuid::kFma | x86::cpuid::kXsave |
                   x86::cpuid::kOsxsave | x86::cpuid::kAvx | x86::cpuid::kF16c);
        break;
      case 0x7:
        if (e.index == 0) {
          e.ebx &= ~x86::cpuid::kLeaf7EbxAvx;
          e.ecx &= ~x86::cpuid::kLeaf7EcxAvx;
          e.edx &= ~x86::cpuid::kLeaf7EdxAvx;
        } else if (e.index == 1) {
          e.eax &= ~x86::cpuid::kLeaf7Sub1EaxAvx;
        }
        break;
      case 0x80000001:
        e.ecx &= ~x86::cpuid::kSvm;
        break;
      default:
        break;
    }
  }
}

}  // namespace sandpool::vm::kvm
