// One call travelling through the pools: what the caller asked, and what
// came of it. The server creates a CallTask per RPC call, submits it to the
// tenant's pool and is told through complete() when the outcome is ready.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "vm/sandbox.h"

namespace sandpool::pool {

using Clock = std::chrono::steady_clock;

class GuestPool;

// Why the pool refused or dropped a call before a VM ran it.
enum class RefusalKind {
  kOverloaded,    // the tenant's queue is full
  kShuttingDown,  // the server is stopping
  kGuestRemoved,  // the guest was removed or replaced while the call waited
  kNoVm,          // no VM could be created (the message says why)
  kVmQuota,       // the tenant's VM quota is held by its other guests
  kCancelled,     // the caller went away before a VM ran the call
};

struct Refusal {
  RefusalKind kind;
  std::string message;
};

struct CallOutcome {
  vm::CallResult call;  // meaningful unless `refusal` is set
  std::optional<Refusal> refusal;
  std::chrono::nanoseconds queue_time{0};  // from submit() to a VM starting
  bool cold_start = false;                 // a VM was created for this call
};

// Ownership: the submitter owns the task until it passes it to
// TenantPool::submit(); from then the pool holds it until it calls
// complete() exactly once, on whichever thread finished the call (a worker,
// or the submitting thread for an immediate refusal). After complete() the
// pool never touches the task again, so complete() may hand it to another
// thread or delete it.
class CallTask {
 public:
  virtual ~CallTask() = default;
  virtual void complete() = 0;

  std::shared_ptr<GuestPool> guest;
  // request.deadline is `deadline` itself, and request.timeout the span
  // from `received` to it, set when a VM starts.
  vm::CallRequest request;
  Clock::time_point received{};
  Clock::time_point deadline{};  // the call fails with kTimeout once past it
  // Set (by the submitter, on any thread) when the caller went away: a call
  // not yet running is dropped instead of run, a running one is stopped as
  // at its deadline once the submitter pokes the backend's watchdog.
  // Shared, because the caller's side may outlive the task. Null: never
  // cancelled.
  std::shared_ptr<const std::atomic<bool>> cancelled;
  CallOutcome outcome;

  bool wasCancelled() const { return cancelled && cancelled->load(std::memory_order_relaxed); }
};

}  // namespace sandpool::pool
