// The CPUID the guest sees: what KVM supports on this host, minus
// virtualisation (a guest must not nest VMs) and minus XSAVE with every
// feature that needs it (AVX, AVX-512, AMX, PKU). Without XSAVE the guest can
// never set CR4.OSXSAVE, so XCR0 stays fixed and a reset need not restore it;
// it also keeps the guest on the baseline the emulated backend offers.
#pragma once

#include <linux/kvm.h>

#include <vector>

namespace sandpool::vm::kvm {

void filterCpuid(std::vector<kvm_cpuid_entry2>& entries);

}  // namespace sandpool::vm::kvm
