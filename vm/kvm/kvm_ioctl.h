// The one place the KVM backend issues ioctls, so every failure names the
// request and the values it was called with.
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>
#include <string_view>

#include "vm/error.h"

namespace sandpool::vm::kvm {

// <linux/kvm.h> declares its flexible array members with __DECLARE_FLEX_ARRAY,
// which in C++ wraps them behind an empty struct: kvm_cpuid2::entries and
// kvm_msrs::entries sit 4 or 8 bytes later than in C, and the request codes
// that encode the struct size come out wrong (KVM answers EINVAL). So the
// backend never touches those members or macros: the codes below are the
// kernel's, and the entry arrays start right after the 8-byte headers.
inline constexpr unsigned long kKvmGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, 8);
inline constexpr unsigned long kKvmSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, 8);
inline constexpr unsigned long kKvmGetMsrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, 8);
inline constexpr unsigned long kKvmSetMsrs = _IOC(_IOC_WRITE, KVMIO, 0x89, 8);
inline constexpr unsigned long kKvmGetXsave = _IOC(_IOC_READ, KVMIO, 0xa4, 4096);
inline constexpr unsigned long kKvmSetXsave = _IOC(_IOC_WRITE, KVMIO, 0xa5, 4096);
inline constexpr size_t kCpuid2HeaderSize = 8;  // u32 nent, u32 padding
inline constexpr size_t kMsrsHeaderSize = 8;    // u32 nmsrs, u32 pad
static_assert(kKvmGetSupportedCpuid == 0xc008ae05 && kKvmGetMsrs == 0xc008ae88);

// "EEXIST (File exists)" for errno `err`.
std::string errnoText(int err);

// ioctl(fd, request, arg), retried on EINTR (none of the requests issued
// through here is meant to be interrupted; KVM_RUN is issued directly).
// Returns the result, or an error "<what>: <errno text>" of `kind`.
Expected<int> kvmIoctl(int fd, unsigned long request, unsigned long arg, std::string_view what,
                       ErrorKind kind = ErrorKind::kInternal);

// A kvm_cpuid2 (C layout) holding `entries`, for KVM_SET_CPUID2.
std::vector<uint8_t> cpuid2Buffer(const std::vector<kvm_cpuid_entry2>& entries);

template <typename T>
Expected<int> kvmIoctl(int fd, unsigned long request, T* arg, std::string_view what,
                       ErrorKind kind = ErrorKind::kInternal) {
  return kvmIoctl(fd, request, reinterpret_cast<unsigned long>(arg), what, kind);
}

}  // namespace sandpool::vm::kvm
