// A frozen KVM vCPU: everything a reset puts back. The guest cannot write
// MSRs (the MSR filter denies them) except the FS/GS bases, which live in the
// segment registers, and KERNEL_GS_BASE, which `swapgs` exchanges with GS.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

#include "vm/backend.h"

namespace sandpool::vm::kvm {

class KvmCpuState final : public CpuState {
 public:
  kvm_regs regs{};
  kvm_sregs sregs{};
  kvm_vcpu_events events{};
  kvm_debugregs debugregs{};
  uint64_t kernel_gs_base = 0;
  kvm_xsave xsave{};  // last: it ends in a flexible array member
};

}  // namespace sandpool::vm::kvm
