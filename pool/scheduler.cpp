#include "pool/scheduler.h"

#include "pool/spin_wait.h"

namespace sandpool::pool {

Scheduler::Scheduler(SchedulerOptions options) : options_(options), queue_(1024) {
  if (options_.workers == 0) options_.workers = 1;
}

Scheduler::~Scheduler() { stop(); }

void Scheduler::start() {
  for (unsigned i = 0; i < options_.workers; ++i) threads_.emplace_back([this] { workerLoop(); });
}

void Scheduler::stop() {
  if (threads_.empty()) return;
  stopping_.store(true);
  // One claim for every worker, whatever order they wake in: a worker that
  // claims returns at once, so none can take another's way out.
  available_.fetch_add(static_cast<int32_t>(threads_.size()));
  available_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  WorkItem* item = nullptr;
  while (queue_.pop(item)) item->dropUnrun();
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
    SpinWait spin(options_.spin, lightlyLoaded());
    while (!stopping_.load(std::memory_order_relaxed) && spin_ticket_.load(std::memory_order_relaxed) == ticket &&
           spin.turn()) {
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

void Scheduler::workerLoop() {
  while (WorkItem* item = next()) item->runOnWorker();
}

}  // namespace sandpool::pool
