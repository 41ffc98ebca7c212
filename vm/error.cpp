#include "vm/error.h"

#include <cstdio>
#include <string>

#include <fmt/format.h>

#include "vm/x86.h"

namespace sandpool::vm {

namespace {

const char* vectorName(uint32_t vector) {
  switch (vector) {
    case 0: return "divide error";
    case 1: return "debug exception";
    case 3: return "breakpoint";
    case 4: return "overflow";
    case 5: return "bound range exceeded";
    case 6: return "invalid opcode";
    case 7: return "device not available";
    case 8: return "double fault";
    case 10: return "invalid TSS";
    case 11: return "segment not present";
    case 12: return "stack-segment fault";
    case 13: return "general protection fault";
    case 14: return "page fault";
    case 16: return "x87 floating-point exception";
    case 17: return "alignment check";
    case 18: return "machine check";
    case 19: return "SIMD floating-point exception";
    default: return "CPU exception";
  }
}

}  // namespace

std::string describeFault(const FaultInfo& fault) {
  std::string text = fmt::format("{} (vector {})", vectorName(fault.vector), fault.vector);
  if (fault.vector == x86::kVectorPageFault)
    text += fmt::format(" at address {}", toHex(fault.address));
  text += fmt::format(", error code {}, rip {}", toHex(fault.error_code), toHex(fault.rip));
  return text;
}

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
    case ErrorKind::kHostLimit: return "host-limit";
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
