// The vCPU worker threads and the queue that feeds them.
//
// Work reaches the workers as WorkItems on one lock-free MPMC queue; an
// atomic count of unclaimed items, waited on with std::atomic::wait (a
// futex), wakes an idle worker per item. A worker spins briefly before it
// sleeps (SpinWait, eagerly only while the server is lightly loaded, not
// at all while long calls run set aside),
// because the next call of a busy server usually arrives within
// microseconds and a futex wake-up costs more than that; only the worker
// that went idle last spins (its caches are the warm ones).
//
// Fair share: a tenant with pending calls has exactly one ticket (itself, a
// WorkItem) in the queue; a worker that takes the ticket runs one of that
// tenant's calls and puts the ticket back at the end of the queue if more are
// pending. So tenants with waiting calls take turns, one call each, whatever
// the length of their queues.
//
// Long calls step aside: a call still running after `long_call` (a guest
// spinning, or waiting on a slow host function) would hold its worker, and
// as many such calls as there are workers would hold every other tenant's
// calls back until they end. The overseer thread finds such a worker, moves
// its thread to SCHED_IDLE, the kernel's class for work that runs only on
// otherwise idle cores, and starts a new worker in its place. The long call
// goes on, on the cores that short calls leave free; the workers that take
// new calls stay `workers` strong and at normal priority, so that a short
// call of any tenant finds a worker and preempts the long ones at once. A
// thread set aside ends with its call: leaving SCHED_IDLE needs a privilege
// the server should not have. Interrupting and resuming the VM instead was
// tried and rejected (docs/server.md, "Long calls").
//
// Threads: schedule() from any thread; start()/stop() from the owner.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <cstddef>
#include <list>
#include <mutex>
#include <thread>

#include <boost/lockfree/queue.hpp>

#include "pool/spin_wait.h"

namespace sandpool::pool {

class WorkItem {
 public:
  // Runs on a worker thread. The item may re-schedule itself.
  virtual void runOnWorker() = 0;
  // Called by stop() for an item still queued, on the stopping thread, so
  // that its owner can fail what it stood for and release what it holds.
  virtual void dropUnrun() = 0;
  // On the overseer's thread, before it sets aside the worker running this
  // item. setAsideEnded() follows once: on the worker's thread when the
  // item has run, or on the overseer's if the item ended before it could be
  // set aside.
  virtual void settingAside() {}
  virtual void setAsideEnded() {}

 protected:
  ~WorkItem() = default;
};

struct SchedulerOptions {
  unsigned workers = 1;
  std::chrono::microseconds spin{50};  // busy-wait before sleeping
  // A call running this long is set aside (see above); 0 never sets aside.
  // The overseer looks this often, so a call steps aside after one to two
  // of these.
  std::chrono::microseconds long_call{5000};
  unsigned max_long_calls = 256;  // set-aside threads at once; past it long calls keep their worker
  // A tenant with this many calls set aside starts no more calls until one
  // ends (TenantPool): more long calls than cores gain it nothing, and every
  // extra thread in the idle class costs the others latency
  // (docs/performance.md). 0: twice the workers.
  unsigned max_long_calls_per_tenant = 0;
  // Runs first on every worker thread, the replacements of set-aside ones
  // included (the server installs its system-call filter there).
  std::function<void()> thread_setup;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void start();
  // Lets the workers finish the item each is running, joins them, then
  // calls dropUnrun() on every item still queued.
  void stop();

  // Any thread. The item must stay alive until stop() has returned: the
  // overseer may still call it after it ran.
  void schedule(WorkItem* item);

  unsigned maxLongCallsPerTenant() const { return options_.max_long_calls_per_tenant; }
  // Calls set aside since start(), and those still running. Any thread.
  uint64_t longCallsSetAside() const { return long_calls_total_.load(std::memory_order_relaxed); }
  uint32_t longCallsRunning() const { return long_calls_running_.load(std::memory_order_relaxed); }

  // Calls accepted by the pools and not yet completed, whichever tenant:
  // the load that tells a waiting thread whether spinning eagerly can hold
  // up anyone. Any thread; the pools report every call's arrival and end.
  void callArrived() {
    if (calls_.fetch_add(1, std::memory_order_relaxed) > 0) {
      if (lone_arrivals_.load(std::memory_order_relaxed) != 0)
        lone_arrivals_.store(0, std::memory_order_relaxed);
    } else if (lone_arrivals_.load(std::memory_order_relaxed) < kLightAfter) {
      lone_arrivals_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  void callEnded() { calls_.fetch_sub(1, std::memory_order_relaxed); }
  // At most one call in flight, and the last kLightAfter calls each found
  // none ahead of it: a core is likely free, so a thread waiting for work
  // may spin eagerly (SpinWait). Under load a lone arrival now and then
  // (the queue drained just before a burst) is no sign of a free core.
  bool lightlyLoaded() const {
    return calls_.load(std::memory_order_relaxed) <= 1 &&
           lone_arrivals_.load(std::memory_order_relaxed) >= kLightAfter;
  }
  static constexpr int32_t kLightAfter = 16;
  // How a thread waiting for work or replies should spin now (SpinWait).
  SpinMode spinMode() const {
    if (long_calls_running_.load(std::memory_order_relaxed) > 0) return SpinMode::none;
    return lightlyLoaded() ? SpinMode::eager : SpinMode::polite;
  }

 private:
  // One worker thread. `state` is the item count times kRunOne, plus kRunning
  // while an item runs and kSetAside once the overseer set the thread aside;
  // the worker and the overseer change it only with atomic read-modify-write
  // operations, so that setting aside and finishing an item cannot cross.
  struct Worker {
    static constexpr uint64_t kRunning = 1, kSetAside = 2, kRunOne = 4;
    std::atomic<uint64_t> state{0};
    std::atomic<bool> exited{false};
    std::atomic<WorkItem*> item{nullptr};  // the one running or last run
    uint64_t state_seen = 0;               // overseer only: `state` at its last look
    std::thread thread;
  };

  void startWorker();  // under workers_mutex_
  void workerLoop(Worker& self);
  void overseerLoop();
  void wakeOverseer();
  // Sets aside the workers whose item has run since the last look; true
  // if any worker is running an item.
  bool lookAtWorkers();
  bool setAside(Worker& worker, uint64_t seen_state);
  WorkItem* next();
  bool tryClaim();

  SchedulerOptions options_;
  boost::lockfree::queue<WorkItem*> queue_;
  // Items pushed and not yet claimed by a worker. 32 bits, so that
  // wait()/notify() are a plain futex.
  std::atomic<int32_t> available_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> spin_ticket_{0};  // the idle worker holding the latest ticket spins
  std::atomic<int32_t> calls_{0};
  std::atomic<int32_t> lone_arrivals_{0};  // consecutive calls that arrived to none in flight
  std::atomic<uint64_t> long_calls_total_{0};
  std::atomic<uint32_t> long_calls_running_{0};

  // Workers, set-aside threads until they end, and the overseer's sleep.
  std::mutex workers_mutex_;
  std::list<Worker> workers_;
  std::condition_variable overseer_cv_;
  // The overseer sleeps without a deadline (no worker was busy for a
  // while); the next worker to start an item wakes it.
  std::atomic<bool> overseer_asleep_{false};
  bool full_logged_ = false;  // overseer only: max_long_calls reached and said
  std::thread overseer_;
};

}  // namespace sandpool::pool
