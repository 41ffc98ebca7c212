// The one place the KVM backend issues ioctls, so every failure names the
// request and the values it was called with.
#pragma once

#include <string>
#include <string_view>

#include "vm/error.h"

namespace sandpool::vm::kvm {

// "EEXIST (File exists)" for errno `err`.
std::string errnoText(int err);

// ioctl(fd, request, arg), retried on EINTR (none of the requests issued
// through here is meant to be interrupted; KVM_RUN is issued directly).
// Returns the result, or an error "<what>: <errno text>" of `kind`.
Expected<int> kvmIoctl(int fd, unsigned long request, unsigned long arg, std::string_view what,
                       ErrorKind kind = ErrorKind::kInternal);

template <typename T>
Expected<int> kvmIoctl(int fd, unsigned long request, T* arg, std::string_view what,
                       ErrorKind kind = ErrorKind::kInternal) {
  return kvmIoctl(fd, request, reinterpret_cast<unsigned long>(arg), what, kind);
}

}  // namespace sandpool::vm::kvm
