#include "server/failure_code.h"

namespace sandpool::server {

FailureCode failureCode(vm::ErrorKind kind) {
  switch (kind) {
    case vm::ErrorKind::kInvalidGuest: return FailureCode::kInvalidGuest;
    case vm::ErrorKind::kUnknownFunction: return FailureCode::kUnknownFunction;
    case vm::ErrorKind::kBadArguments: return FailureCode::kBadArguments;
    case vm::ErrorKind::kGuestAbort: return FailureCode::kGuestAbort;
    case vm::ErrorKind::kGuestFault: return FailureCode::kGuestFault;
    case vm::ErrorKind::kTimeout: return FailureCode::kTimeout;
    case vm::ErrorKind::kBadHostCall: return FailureCode::kBadHostCall;
    case vm::ErrorKind::kOutOfMemory: return FailureCode::kOutOfMemory;
    case vm::ErrorKind::kLimitExceeded: return FailureCode::kLimitExceeded;
    case vm::ErrorKind::kHostLimit: return FailureCode::kOverloaded;
    case vm::ErrorKind::kResetFailed:
    case vm::ErrorKind::kBackendUnavailable:
    case vm::ErrorKind::kInternal: return FailureCode::kInternal;
  }
  return FailureCode::kInternal;
}

FailureCode failureCode(pool::RefusalKind kind) {
  switch (kind) {
    case pool::RefusalKind::kOverloaded: return FailureCode::kOverloaded;
    case pool::RefusalKind::kShuttingDown: return FailureCode::kShuttingDown;
    case pool::RefusalKind::kGuestRemoved: return FailureCode::kUnknownGuest;
    case pool::RefusalKind::kNoVm: return FailureCode::kInternal;
    case pool::RefusalKind::kVmQuota: return FailureCode::kQuotaExceeded;
    // Nobody reads it: the caller is gone.
    case pool::RefusalKind::kCancelled: return FailureCode::kInternal;
  }
  return FailureCode::kInternal;
}

}  // namespace sandpool::server
