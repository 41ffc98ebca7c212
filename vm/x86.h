// x86-64 architectural constants, one copy for the KVM backend (what it
// programs into the vCPU and the page tables), the emulated backend (the
// faults it reports as KVM would) and the tests. Only what sandpool uses;
// names follow the Intel SDM.
#pragma once

#include <cstdint>

namespace sandpool::vm::x86 {

// Control registers.
inline constexpr uint64_t kCr0Pe = 1ull << 0;   // protected mode
inline constexpr uint64_t kCr0Mp = 1ull << 1;   // monitor coprocessor (wait honours TS)
inline constexpr uint64_t kCr0Et = 1ull << 4;   // hard-wired 1 on every x86-64
inline constexpr uint64_t kCr0Ne = 1ull << 5;   // x87 errors as #MF, not via the legacy IRQ
inline constexpr uint64_t kCr0Wp = 1ull << 16;  // read-only pages bind CPL 0 as well
inline constexpr uint64_t kCr0Am = 1ull
                                   << 18;  // alignment checks allowed (with RFLAGS.AC at CPL 3)
inline constexpr uint64_t kCr0Pg = 1ull << 31;  // paging
// CR0 in long mode as the KVM backend enters the guest (docs/kvm.md).
inline constexpr uint64_t kCr0LongMode = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Pg;

inline constexpr uint64_t kCr4Pae = 1ull << 5;
inline constexpr uint64_t kCr4Osfxsr = 1ull << 9;       // SSE enabled (fxsave/fxrstor)
inline constexpr uint64_t kCr4Osxmmexcpt = 1ull << 10;  // SSE exceptions as #XM

inline constexpr uint64_t kEferLme = 1ull << 8;
inline constexpr uint64_t kEferLma = 1ull << 10;
inline constexpr uint64_t kEferNxe = 1ull << 11;

inline constexpr uint64_t kRflagsReserved = 1ull << 1;  // always 1

// Exception vectors.
inline constexpr uint32_t kVectorInvalidOpcode = 6;       // #UD
inline constexpr uint32_t kVectorGeneralProtection = 13;  // #GP
inline constexpr uint32_t kVectorPageFault = 14;          // #PF

// Page-fault error code bits.
inline constexpr uint64_t kPfPresent = 1ull << 0;  // protection violation, not a missing page
inline constexpr uint64_t kPfWrite = 1ull << 1;
inline constexpr uint64_t kPfFetch = 1ull << 4;  // instruction fetch

// Page-table entry bits (4-level paging).
inline constexpr uint64_t kPtePresent = 1ull << 0;
inline constexpr uint64_t kPteWritable = 1ull << 1;
inline constexpr uint64_t kPteUser = 1ull << 2;
inline constexpr uint64_t kPteAccessed = 1ull << 5;
inline constexpr uint64_t kPteDirty = 1ull << 6;
inline constexpr uint64_t kPteLarge = 1ull << 7;  // 2 MiB page in a page directory
inline constexpr uint64_t kPteNoExecute = 1ull << 63;
inline constexpr uint64_t kPteAddressMask = 0x000ffffffffff000ull;

inline constexpr uint64_t kSmallPage = 4096;
inline constexpr uint64_t kLargePage = 2ull << 20;
inline constexpr uint64_t kEntriesPerTable = 512;

// The selectors of the flat GDT the KVM backend enters with (and the guest
// SDK loads again): null, code, data, TSS.
inline constexpr uint16_t kSelectorCode = 0x08;
inline constexpr uint16_t kSelectorData = 0x10;
inline constexpr uint16_t kSelectorTss = 0x18;

// Segment descriptor types (system and code/data).
inline constexpr uint8_t kSegCodeExecReadAccessed = 0xb;
inline constexpr uint8_t kSegDataReadWriteAccessed = 0x3;
inline constexpr uint8_t kSegTss64Busy = 0xb;
inline constexpr uint8_t kSegLdt = 0x2;

// Debug registers at reset (SDM 17.2): DR6 reserved bits set, DR7 bit 10 set.
inline constexpr uint64_t kDr6Reset = 0xffff0ff0;
inline constexpr uint64_t kDr7Reset = 0x400;

// MSRs. The guest may touch only the segment bases, which it could also
// load through segment registers and which KVM_SET_SREGS restores on every
// reset.
inline constexpr uint32_t kMsrEfer = 0xc0000080;
inline constexpr uint32_t kMsrFsBase = 0xc0000100;
inline constexpr uint32_t kMsrGsBase = 0xc0000101;
inline constexpr uint32_t kMsrKernelGsBase = 0xc0000102;

// CPUID feature bits the backend hides from the guest.
namespace cpuid {
// Leaf 1, ECX.
inline constexpr uint32_t kVmx = 1u << 5;
inline constexpr uint32_t kFma = 1u << 12;
inline constexpr uint32_t kXsave = 1u << 26;
inline constexpr uint32_t kOsxsave = 1u << 27;
inline constexpr uint32_t kAvx = 1u << 28;
inline constexpr uint32_t kF16c = 1u << 29;
inline constexpr uint32_t kLeaf1EcxHidden = kVmx | kFma | kXsave | kOsxsave | kAvx | kF16c;
// Leaf 0x80000001, ECX.
inline constexpr uint32_t kSvm = 1u << 2;
// Leaf 7 subleaf 0, EBX: AVX2 and the AVX-512 family.
inline constexpr uint32_t kLeaf7EbxAvx2 = 1u << 5;
inline constexpr uint32_t kLeaf7EbxAvx = (1u << 5) | (1u << 16) | (1u << 17) | (1u << 21) |
                                         (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) |
                                         (1u << 31);
// Leaf 7 subleaf 0, ECX: AVX-512 extensions, VEX/EVEX crypto, PKU/OSPKE.
inline constexpr uint32_t kLeaf7EcxAvx = (1u << 1) | (1u << 3) | (1u << 4) | (1u << 6) | (1u << 9) |
                                         (1u << 10) | (1u << 11) | (1u << 12) | (1u << 14);
// Leaf 7 subleaf 0, EDX: AVX-512 extensions and AMX.
inline constexpr uint32_t kLeaf7EdxAvx =
    (1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25);
// Leaf 7 subleaf 1, EAX: AVX-VNNI, AVX512_BF16.
inline constexpr uint32_t kLeaf7Sub1EaxAvx = (1u << 4) | (1u << 5);
}  // namespace cpuid

}  // namespace sandpool::vm::x86
