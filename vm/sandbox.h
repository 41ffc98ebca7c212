// One micro-VM of one guest: guest memory (a private view of the snapshot)
// and a vCPU. call() runs one function and always resets the VM before it
// returns, so nothing carries from one call to the next.
//
// Thread: a Sandbox is used by one thread at a time (a pool worker).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vm/backend.h"
#include "vm/guest_memory.h"
#include "vm/host_functions.h"
#include "vm/snapshot.h"
#include "vm/value.h"

namespace sandpool::vm {

struct CallRequest {
  std::string function;
  std::vector<Value> args;
  // The call is stopped at `deadline`, set once where the call was received
  // (a pool's CallTask::deadline: the time a call queued counts against it)
  // and never converted. A request without one is refused.
  std::chrono::steady_clock::time_point deadline{};
  // The timeout the caller was given, only to name it in a timeout's message.
  std::chrono::nanoseconds timeout{0};
  HostFunctions* host_functions = nullptr;  // optional, for non-built-in host calls
  // Optional: set from another thread when the caller went away, then
  // Watchdog::poke(); the call is stopped as at its deadline. Must outlive
  // the call.
  const std::atomic<bool>* cancelled = nullptr;

  // deadline = now + `given`: for callers whose clock starts as they call
  // (tools, tests, benchmarks).
  void startTimeout(std::chrono::nanoseconds given);
};

struct CallStats {
  std::chrono::nanoseconds run_time{0};  // in the guest, host calls included
  std::chrono::nanoseconds reset_time{0};
  uint32_t host_calls = 0;
  uint64_t pages_restored = 0;
};

struct CallResult {
  Expected<Value> result = Value{};
  std::string output;  // what the guest printed, at most config.max_output_bytes
  bool output_truncated = false;
  CallStats stats;
};

class Sandbox {
 public:
  // A new VM over an existing snapshot: maps its memfd copy-on-write and
  // loads its CPU state. Costs a vCPU, not a boot. Its calls are watched by
  // the backend's watchdog: the sandbox must not outlive `backend`.
  static Expected<std::unique_ptr<Sandbox>> create(Backend& backend,
                                                   std::shared_ptr<const Snapshot> snapshot);
  ~Sandbox();

  // Runs one function. Errors (unknown function, bad arguments, abort,
  // fault, timeout, ...) come back in result; the VM is reset either way.
  // If the reset fails, healthy() turns false and the VM must be dropped.
  CallResult call(const CallRequest& request);

  bool healthy() const { return healthy_; }
  const Snapshot& snapshot() const { return *snapshot_; }
  uint64_t callCount() const { return calls_; }

 private:
  Sandbox(Watchdog& watchdog, std::shared_ptr<const Snapshot> snapshot, GuestMemory memory);

  Watchdog& watchdog_;  // the backend's
  std::shared_ptr<const Snapshot> snapshot_;
  GuestMemory memory_;
  std::unique_ptr<MicroVm> vcpu_;
  std::vector<uint8_t> request_message_;  // reused by every call: no allocation once warm
  bool healthy_ = true;
  uint64_t calls_ = 0;
};

}  // namespace sandpool::vm
