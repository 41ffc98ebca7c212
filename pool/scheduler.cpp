#include "pool/scheduler.h"

#include <pthread.h>
#include <sched.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "pool/spin_wait.h"

namespace sandpool::pool {

Scheduler::Scheduler(SchedulerOptions options) : options_(options), queue_(1024) {
  if (options_.workers == 0) options_.workers = 1;
  if (options_.max_long_calls_per_tenant == 0)
    options_.max_long_calls_per_tenant = 2 * options_.workers;
}

Scheduler::~Scheduler() { stop(); }

void Scheduler::start() {
  std::lock_guard lock(workers_mutex_);
  for (unsigned i = 0; i < options_.workers; ++i) startWorker();
  if (options_.long_call.count() > 0) overseer_ = std::thread([this] { overseerLoop(); });
}

void Scheduler::startWorker() {
  Worker& worker = workers_.emplace_back();
  worker.thread = std::thread([this, &worker] { workerLoop(worker); });
}

void Scheduler::stop() {
  {
    std::lock_guard lock(workers_mutex_);
    if (workers_.empty()) return;
    stopping_.store(true);
  }
  overseer_cv_.notify_all();
  if (overseer_.joinable()) overseer_.join();
  // The overseer is gone, so the list no longer changes. One claim for
  // every thread, whatever order they wake in: a worker that claims returns
  // at once, so none can take another's way out (a set-aside thread takes
  // none and ends with its call).
  available_.fetch_add(static_cast<int32_t>(workers_.size()));
  available_.notify_all();
  for (Worker& worker : workers_) worker.thread.join();
  workers_.clear();
  WorkItem* item = nullptr;
  while (queue_.pop(item)) item->dropUnrun();
}

void Scheduler::workerLoop(Worker& self) {
  // Named for operators (top -H, /proc/PID/task/*/comm) and for the
  // system-call filter's tests.
  pthread_setname_np(pthread_self(), "sp-worker");
  if (options_.thread_setup) options_.thread_setup();
  while (WorkItem* item = next()) {
    // Only this thread changes `state` while no item runs. Sequentially
    // consistent, for the pairing described in overseerLoop().
    self.item.store(item, std::memory_order_relaxed);
    self.state.store(self.state.load(std::memory_order_relaxed) + Worker::kRunning);
    if (overseer_asleep_.load()) wakeOverseer();
    item->runOnWorker();
    const uint64_t was =
        self.state.fetch_add(Worker::kRunOne - Worker::kRunning, std::memory_order_acq_rel);
    if (was & Worker::kSetAside) {
      long_calls_running_.fetch_sub(1, std::memory_order_relaxed);
      item->setAsideEnded();
      break;
    }
  }
  self.exited.store(true);
}

void Scheduler::overseerLoop() {
  pthread_setname_np(pthread_self(), "sp-overseer");
  const auto look_every = options_.long_call;
  // Ticks without a busy worker before the overseer sleeps until woken: a
  // server with calls now and then keeps it ticking (a few wake-ups per
  // millisecond of threshold), an idle one lets it sleep.
  constexpr int kIdleTicksBeforeSleep = 200;
  int idle_ticks = 0;
  std::unique_lock lock(workers_mutex_);
  while (!stopping_.load()) {
    idle_ticks = lookAtWorkers() ? 0 : idle_ticks + 1;
    if (idle_ticks < kIdleTicksBeforeSleep) {
      overseer_cv_.wait_for(lock, look_every);
      continue;
    }
    // Pairs with workerLoop(): a worker that starts an item after this
    // store sees it and wakes the overseer; one that started before is seen
    // by the look below.
    overseer_asleep_.store(true);
    if (!lookAtWorkers())
      overseer_cv_.wait(lock, [this] { return !overseer_asleep_.load() || stopping_.load(); });
    overseer_asleep_.store(false);
    idle_ticks = 0;
  }
}

void Scheduler::wakeOverseer() {
  // Rare: the first call after the server sat idle for a while.
  std::lock_guard lock(workers_mutex_);
  overseer_asleep_.store(false);
  overseer_cv_.notify_all();
}

bool Scheduler::lookAtWorkers() {
  bool any_running = false;
  for (auto it = workers_.begin(); it != workers_.end();) {
    Worker& worker = *it;
    if (worker.exited.load()) {
      worker.thread.join();
      it = workers_.erase(it);
      continue;
    }
    const uint64_t state = worker.state.load();
    const bool running = (state & Worker::kRunning) && !(state & Worker::kSetAside);
    any_running = any_running || running;
    // The same item running at two looks has run at least long_call.
    if (running && state == worker.state_seen && setAside(worker, state)) startWorker();
    worker.state_seen = state;
    ++it;
  }
  return any_running;
}

bool Scheduler::setAside(Worker& worker, uint64_t seen_state) {
  if (long_calls_running_.load() >= options_.max_long_calls) {
    if (!full_logged_) {
      spdlog::warn(
          "event=long_calls_full max_long_calls={} what=\"further long calls keep their worker\"",
          options_.max_long_calls);
      full_logged_ = true;
    }
    return false;
  }
  full_logged_ = false;
  // The item may have ended, and the worker run another, since the look;
  // the compare-exchange then fails and the worker goes on as one. The
  // item read here is the one to undo settingAside() on either way.
  WorkItem* item = worker.item.load();
  item->settingAside();
  if (!worker.state.compare_exchange_strong(seen_state, seen_state | Worker::kSetAside)) {
    item->setAsideEnded();
    return false;
  }
  long_calls_running_.fetch_add(1, std::memory_order_relaxed);
  long_calls_total_.fetch_add(1, std::memory_order_relaxed);
  sched_param param{};
  if (int err = pthread_setschedparam(worker.thread.native_handle(), SCHED_IDLE, &param);
      err != 0) {
    spdlog::warn("event=set_aside_failed error=\"{}\"", std::strerror(err));
  }
  return true;
}

void Scheduler::schedule(WorkItem* item) {
  queue_.push(item);
  available_.fetch_add(1);

  // A system call only if a worker sleeps in wait(); none does while one
  // spins, which is the common case under load.
  available_.notify_one();
}

bool Scheduler::tryClaim() {
  int32_t n = available_.load(std::memory_order_relaxed);
  while (n > 0) {
    if (available_.compare_exchange_weak(n, n - 1)) return true;
  }
  return false;
}

WorkItem* Scheduler::next() {
  bool claimed = tryClaim();
  if (!claimed && options_.spin.count() > 0) {
    // The worker that finished last spins, and an earlier spinner gives way
    // to it: its caches (the VM's memory, the emulator's translated code)
    // are the warm ones for the next call.
    const uint64_t ticket = spin_ticket_.fetch_add(1) + 1;
    SpinWait spin(options_.spin, spinMode());
    while (!stopping_.load(std::memory_order_relaxed) &&
           spin_ticket_.load(std::memory_order_relaxed) == ticket && spin.turn()) {
      if ((claimed = tryClaim())) break;
    }
  }
  while (!claimed) {
    if (stopping_.load()) return nullptr;
    available_.wait(0);
    claimed = tryClaim();
  }
  if (stopping_.load()) return nullptr;
  // Every claim follows a push(), so an item is there; the loop only covers
  // the window in which the pushing thread's node is not yet linked.
  WorkItem* item = nullptr;
  while (!queue_.pop(item)) std::this_thread::yield();
  return item;
}

}  // namespace sandpool::pool
