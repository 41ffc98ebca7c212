// The vCPU worker threads and the queue that feeds them.
//
// Work reaches the workers as WorkItems on one lock-free MPMC queue; an
// atomic count of unclaimed items, waited on with std::atomic::wait (a
// futex), wakes an idle worker per item. A worker spins briefly before it
// sleeps (SpinWait, eagerly only while the server is lightly loaded),
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
// Threads: schedule() from any thread; start()/stop() from the owner.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <thread>
#include <vector>

#include <boost/lockfree/queue.hpp>

namespace sandpool::pool {

class WorkItem {
 public:
  // Runs on a worker thread. The item may re-schedule itself.
  virtual void runOnWorker() = 0;
  // Called by stop() for an item still queued, on the stopping thread, so
  // that its owner can fail what it stood for and release what it holds.
  virtual void dropUnrun() = 0;

 protected:
  ~WorkItem() = default;
};

struct SchedulerOptions {
  unsigned workers = 1;
  std::chrono::microseconds spin{50};  // busy-wait before sleeping
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

  // Any thread. The item must stay alive until it has run.
  void schedule(WorkItem* item);

  // Calls accepted by the pools and not yet completed, whichever tenant:
  // the load that tells a waiting thread whether spinning eagerly can hold
  // up anyone. Any thread; the pools report every call's arrival and end.
  void callArrived() {
    if (calls_.fetch_add(1, std::memory_order_relaxed) > 0) {
      if (lone_arrivals_.load(std::memory_order_relaxed) != 0) lone_arrivals_.store(0, std::memory_order_relaxed);
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

 private:
  void workerLoop();
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
  std::vector<std::thread> threads_;
};

}  // namespace sandpool::pool
