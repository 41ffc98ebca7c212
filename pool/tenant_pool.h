// One tenant's share of the server: its call queue, its quota and the
// maintenance of its guests' pools (scale to zero) on its own Asio strand.
//
// The call path is lock-free: submit() pushes the task on a Boost.Lockfree
// queue and, if the tenant has no ticket in the scheduler yet, schedules one;
// a worker holding the ticket takes one task (see Scheduler for why that is
// fair between tenants). A full queue refuses the call at once (overloaded).
//
// Threads: submit() from any one thread at a time per task; the strand runs
// the idle timer and addGuest()/removeGuest(); counters from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/lockfree/queue.hpp>

#include "pool/call_task.h"
#include "pool/guest_pool.h"
#include "pool/scheduler.h"

namespace sandpool::pool {

struct Quota {
  uint32_t max_vms = 16;  // VMs of all guests together
  uint32_t max_guests = 16;
  uint64_t max_memory_bytes = 1ull << 30;  // guest memory of all VMs together
  uint32_t max_concurrent_calls = 64;      // running at once; more wait in the queue
  uint32_t queue_length = 256;             // waiting at once; more are refused

  bool operator==(const Quota&) const = default;
};

struct TenantCounters {
  uint32_t queued = 0, running = 0, long_calls = 0, vms = 0;
  uint64_t memory_bytes = 0, overloaded = 0;
};

class TenantPool : private WorkItem {
 public:
  TenantPool(Scheduler& scheduler, vm::Backend& backend, boost::asio::io_context& io,
             std::string name, Quota quota, std::chrono::nanoseconds idle_time);
  ~TenantPool();
  TenantPool(const TenantPool&) = delete;
  TenantPool& operator=(const TenantPool&) = delete;

  const std::string& name() const { return name_; }
  const Quota& quota() const { return quota_; }
  Scheduler& scheduler() { return scheduler_; }
  vm::Backend& backend() { return backend_; }

  // Queues `task` (task->guest set) for a worker, or completes it at once
  // with a refusal (overloaded, shutting down).
  void submit(CallTask* task);

  // Strand work ends: the idle timer is cancelled and not re-armed, so the
  // io_context runs out of work once the handlers already posted are done.
  void stop();

  // From now on queued and new calls are refused with kShuttingDown.
  void beginShutdown() { shutting_down_.store(true); }
  bool shuttingDown() const { return shutting_down_.load(); }

  // VM accounting against the quota; any thread.
  bool reserveVm(uint64_t memory_bytes);
  void releaseVm(uint64_t memory_bytes);

  // Worker: a task of this tenant has finished (completed or parked calls
  // count as running until they complete).
  void taskFinished();

  // Guests whose idle VMs the strand's timer scales to zero. Any thread;
  // the work happens on the strand.
  void addGuest(std::shared_ptr<GuestPool> guest);
  void removeGuest(std::shared_ptr<GuestPool> guest);

  // Worker, when the tenant's VM quota is held and `needy` has no VM of its
  // own: drops one idle VM of another of the tenant's guests, so that idle
  // VMs give way to calls. False if no other guest has an idle VM. Takes a
  // lock, but only on this path, never on a call that finds a VM.
  bool reclaimIdleVmFor(const GuestPool& needy);

  TenantCounters counters() const;

 private:
  void runOnWorker() override;  // the tenant's ticket: run one task
  void dropUnrun() override;    // at shutdown: fail what is still queued
  // A call of this tenant steps aside, or ended after it did: while the
  // scheduler's per-tenant number of them run, no other call starts.
  void settingAside() override;
  void setAsideEnded() override;
  // Fails a call that was accepted (and counted as arrived) with
  // kShuttingDown.
  void refuseQueued(CallTask* task);
  void maybeSchedule();
  void armIdleTimer();
  void onIdleTick();

  Scheduler& scheduler_;
  vm::Backend& backend_;
  const std::string name_;
  const Quota quota_;
  const std::chrono::nanoseconds idle_time_;

  boost::lockfree::queue<CallTask*> pending_;
  std::atomic<uint32_t> queued_{0};         // reserved queue places (pushed or about to be)
  std::atomic<uint32_t> pending_count_{0};  // tasks in pending_
  std::atomic<uint32_t> running_{0};
  std::atomic<uint32_t> long_calls_{0};  // set aside (or about to be), part of running_
  std::atomic<bool> scheduled_{false};   // the ticket is in the scheduler's queue
  std::atomic<bool> shutting_down_{false};
  std::atomic<uint32_t> vms_{0};
  std::atomic<uint64_t> memory_bytes_{0};
  std::atomic<uint64_t> overloaded_{0};

  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::steady_timer idle_timer_;
  bool stopped_ = false;                            // strand only
  std::vector<std::shared_ptr<GuestPool>> guests_;  // strand only
  // The same guests, for reclaimIdleVmFor() on a worker.
  std::mutex reclaimable_mutex_;
  std::vector<std::weak_ptr<GuestPool>> reclaimable_;
};

}  // namespace sandpool::pool
