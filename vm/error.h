// The error type of everything below the RPC edge. Each kind names what went
// wrong in terms a caller can act on; the message names the step and values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace sandpool::vm {

enum class ErrorKind {
  kInvalidGuest,        // the ELF (or its export table) was refused
  kUnknownFunction,     // the guest exports no function of that name
  kBadArguments,        // argument count or types do not match the export
  kGuestAbort,          // the guest aborted on purpose, or returned an error
  kGuestFault,          // CPU exception, unmapped or forbidden access, bad port
  kTimeout,             // the call ran past its deadline and was stopped
  kBadHostCall,         // a malformed or refused host call
  kOutOfMemory,         // the guest ran out of heap
  kLimitExceeded,       // a per-call limit (buffer size, host calls) was hit
  kResetFailed,         // the VM could not be restored; it must be discarded
  kBackendUnavailable,  // the requested backend cannot be used on this host
  kHostLimit,           // a new VM would pass a process-wide limit (vm/host_limits.h)
  kInternal,            // a host-side failure (syscall, emulator)
};

std::string_view errorKindName(ErrorKind kind);

// Where a guest fault happened, as the CPU (or the emulator) reported it.
struct FaultInfo {
  uint32_t vector = 0;  // x86 exception vector (14 = page fault)
  uint64_t error_code = 0;
  uint64_t address = 0;  // faulting data address (cr2) where it applies
  uint64_t rip = 0;
};

struct Error {
  ErrorKind kind;
  std::string message;
  std::optional<FaultInfo> fault;

  std::string describe() const;  // "guest-fault: ..." for logs
};

Error makeError(ErrorKind kind, std::string message);

// "page fault (vector 14) at address ..., error code ..., rip ..." and
// friends, for fault messages.
std::string describeFault(const FaultInfo& fault);

// "0x1f": how error messages write addresses, ports and sizes.
std::string toHex(uint64_t value);

// A value or an Error. Small on purpose: the vm layer's results are either
// fine or carry one typed error up to the caller.
template <typename T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : state_(std::move(value)) {}
  Expected(Error error) : state_(std::move(error)) {}

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  const Error& error() const { return std::get<1>(state_); }
  Error&& takeError() { return std::get<1>(std::move(state_)); }

 private:
  std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Expected<void> {
 public:
  Expected() = default;
  Expected(Error error) : error_(std::move(error)) {}

  bool ok() const { return !error_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return *error_; }
  Error&& takeError() { return std::move(*error_); }

 private:
  std::optional<Error> error_;
};

}  // namespace sandpool::vm
