// The CPUID the guest sees: what KVM supports on this host, minus
// virtualisation (a guest must not nest VMs) and minus XSAVE with every
// feature that needs it (AVX, AVX-512, AMX, PKU). Without XSAVE the guest can
// never set CR4.OSXSAVE, so XCR0 stays fixed and a reset need not restore it;
// it also keeps the guest on the baseline the emulated backend offers.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sandpool::vm::kvm {

void filterCpuid(std::vector<kvm_cpuid_entry2>& entries);

// The features filterCpuid() hides that a guest's leaf 1 ECX and leaf 7 EBX
// still show ("XSAVE", "AVX2", ...): empty where the filter is in force. The
// self-test asks the guest's own `cpuid`, since a KVM may ignore the table it
// was given (kvm-pvm does).
std::vector<std::string> hiddenFeaturesSeen(uint32_t leaf1_ecx, uint32_t leaf7_ebx);

}  // namespace sandpool::vm::kvm
