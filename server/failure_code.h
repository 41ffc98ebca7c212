// Why an operation or a call was refused or failed, numbered as the
// schema's ErrorCode (rpc_codec.cpp checks each) so that a log line's code=
// and a metric's outcome read the same as the wire, without a capnp type
// below the RPC edge.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pool/call_task.h"
#include "vm/error.h"

namespace sandpool::server {

enum class FailureCode : uint16_t {
  kInternal = 0,
  kUnauthenticated = 1,
  kInvalidArgument = 2,
  kInvalidGuest = 3,
  kTooLarge = 4,
  kGuestExists = 5,
  kUnknownGuest = 6,
  kUnknownFunction = 7,
  kBadArguments = 8,
  kGuestAbort = 9,
  kGuestFault = 10,
  kTimeout = 11,
  kBadHostCall = 12,
  kOutOfMemory = 13,
  kLimitExceeded = 14,
  kOverloaded = 15,
  kQuotaExceeded = 16,
  kShuttingDown = 17,
};
inline constexpr size_t kFailureCodeCount = 18;

// The code a client is sent for a call that failed in its VM ...
FailureCode failureCode(vm::ErrorKind kind);
// ... and for one the pool refused.
FailureCode failureCode(pool::RefusalKind kind);

}  // namespace sandpool::server
