#include "vm/error.h"

#include <cstdio>

namespace sandpool::vm {

std::string_view errorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidGuest: return "invalid-guest";
    case ErrorKind::kUnknownFunction: return "unknown-function";
    case ErrorKind::kBadArguments: return "bad-arguments";
    case ErrorKind::kGuestAbort: return "guest-abort";
    case ErrorKind::kGuestFault: return "guest-fault";
    case ErrorKind::kTimeout: return "timeout";
    case ErrorKind::kBadHostCall: return "bad-host-call";
    case ErrorKind::kOutOfMemory: return "out-of-memory";
    case ErrorKind::kLimitExceeded: return "limit-exceeded";
    case ErrorKind::kResetFailed: return "reset-failed";
    case ErrorKind::kBackendUnavailable: return "backend-unavailable";
    case ErrorKind::kInternal: return "internal";
  }
  return "unknown";
}

std::string Error::describe() const {
  std::string text(errorKindName(kind));
  text += ": ";
  text += message;
  return text;
}

Error makeError(ErrorKind kind, std::string message) { return Error{kind, std::move(message), {}}; }

std::string toHex(uint64_t value) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(value));
  return buf;
}

}  // namespace sandpool::vm
