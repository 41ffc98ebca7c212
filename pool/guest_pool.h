// The warm VMs of one guest of one tenant.
//
// A call takes an idle VM (lock-free pop), or creates one while the guest is
// under its VM limit (a cold start), or, at the limit, waits in this guest's
// waiting queue until a VM is released; the worker that releases a VM runs
// the oldest waiting call on it before making the VM idle again. After every
// call the VM has been reset by vm::Sandbox::call(); a VM whose reset failed
// (healthy() false) is dropped and a new one is created when needed.
//
// Threads: run() on workers; prewarm() as a worker job; scaleToZero() and
// retire() on the tenant's strand; stats() and settings from any thread.
// Nothing here takes a lock: queues are Boost.Lockfree, counters atomic.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <boost/lockfree/queue.hpp>

#include "pool/call_task.h"
#include "pool/latency_histogram.h"
#include "pool/scheduler.h"
#include "vm/backend.h"
#include "vm/snapshot.h"

namespace sandpool::pool {

class TenantPool;

struct PoolSettings {
  uint32_t min_warm = 1;  // VMs kept booted while the guest is in use
  uint32_t max_vms = 8;   // most VMs of this guest at once
};

struct GuestStats {
  uint32_t warm = 0, busy = 0, waiting = 0;
  uint64_t created = 0, reset = 0, discarded = 0, failed = 0, timeouts = 0, calls = 0;
  LatencyHistogram::Snapshot latency;
  // The snapshot's resident memory, paid once per guest whatever its VMs.
  uint64_t snapshot_bytes = 0;
};

class GuestPool : public std::enable_shared_from_this<GuestPool>, private WorkItem {
 public:
  GuestPool(TenantPool& tenant, std::string name, std::shared_ptr<const vm::Snapshot> snapshot,
            PoolSettings settings);
  ~GuestPool();
  GuestPool(const GuestPool&) = delete;
  GuestPool& operator=(const GuestPool&) = delete;

  const std::string& name() const { return name_; }
  const vm::Snapshot& snapshot() const { return *snapshot_; }

  PoolSettings settings() const;
  void setSettings(PoolSettings settings);

  // Worker: runs `task` (or parks it until a VM is free) and completes it.
  void run(CallTask* task);

  // Any thread: asks a worker to create VMs up to min_warm.
  void requestPrewarm();
  // Any thread: creates VMs up to min_warm on the calling thread, before
  // the guest is installed, so that its first call finds a warm VM.
  void prewarmNow();
  // Strand: drops every idle VM if no call arrived for `idle`. Returns the
  // number of VMs dropped.
  uint32_t scaleToZeroIfIdle(std::chrono::nanoseconds idle);
  // Strand or owner: no new calls run; idle VMs are dropped now, busy ones on
  // release, waiting calls fail with kGuestRemoved.
  void retire();

  GuestStats stats() const;

  // Any thread: drops one idle VM, if there is one (TenantPool::
  // reclaimIdleVmFor, for another guest of the tenant).
  bool dropOneIdleVm();

 private:
  void runOnWorker() override;  // the prewarm (and rescue) job
  void scheduleWorkerJob();
  void dropUnrun() override;

  std::unique_ptr<vm::Sandbox> popIdle();
  // Makes `vm` idle, or runs a waiting call on it if one turned up.
  void putIdle(std::unique_ptr<vm::Sandbox> vm);
  CallTask* takeWaiting();
  void park(CallTask* task);
  void parkOrRefuse(CallTask* task);
  void refuseWaiting();
  // A fresh VM if the guest and tenant limits allow; nullptr at a limit;
  // `error` set if creation failed.
  std::unique_ptr<vm::Sandbox> createVm(std::optional<vm::Error>& error);
  bool reserveVm();
  void unreserveVm();
  void dropVm(std::unique_ptr<vm::Sandbox> vm);
  // Runs tasks on `vm` (and on VMs it acquires) while waiting calls remain.
  void serve(CallTask* task, std::unique_ptr<vm::Sandbox> vm, bool cold);
  // Runs one call; returns the VM if it may be reused.
  std::unique_ptr<vm::Sandbox> execute(CallTask* task, std::unique_ptr<vm::Sandbox> vm, bool cold);
  void refuse(CallTask* task, RefusalKind kind, std::string message);
  void refuseRemoved(CallTask* task);                       // kGuestRemoved
  void refuseNoVm(CallTask* task, const vm::Error& error);  // kNoVm
  void finish(CallTask* task);

  TenantPool& tenant_;
  const std::string name_;
  const std::shared_ptr<const vm::Snapshot> snapshot_;

  boost::lockfree::queue<vm::Sandbox*> idle_;
  boost::lockfree::queue<CallTask*> waiting_;
  std::atomic<uint32_t> min_warm_, max_vms_;
  std::atomic<uint32_t> vm_count_{0}, idle_count_{0}, busy_{0}, waiting_count_{0};
  std::atomic<bool> prewarm_queued_{false};
  // Keeps the pool alive while its prewarm job is queued; written by the
  // thread that won prewarm_queued_, read by the worker that runs the job.
  std::shared_ptr<GuestPool> prewarm_keepalive_;
  std::atomic<bool> retired_{false};
  std::atomic<int64_t> last_used_ns_;
  std::atomic<uint64_t> created_{0}, reset_{0}, discarded_{0}, failed_{0}, timeouts_{0}, calls_{0};
  LatencyHistogram latency_;
};

}  // namespace sandpool::pool
