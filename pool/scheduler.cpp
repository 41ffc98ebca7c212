#include "pool/scheduler.h"

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
  ready_.release(static_cast<ptrdiff_t>(threads_.size()));
  for (auto& t : threads_) t.join();
  threads_.clear();
  WorkItem* item = nullptr;
  while (queue_.pop(item)) item->dropUnrun();
}

void Scheduler::schedule(WorkItem* item) {
  queue_.push(item);
  available_.fetch_add(1);
  ready_.release();
}

WorkItem* Scheduler::next() {
  bool acquired = available_.load(std::memory_order_relaxed) > 0 && ready_.try_acquire();
  bool expected = false;
  if (!acquired && options_.spin.count() > 0 && spinner_.compare_exchange_strong(expected, true)) {
    auto spin_until = std::chrono::steady_clock::now() + options_.spin;
    while (std::chrono::steady_clock::now() < spin_until) {
      if (available_.load(std::memory_order_relaxed) > 0 && (acquired = ready_.try_acquire())) break;
      // Yielding keeps the spinner from holding a core that the RPC thread
      // or a running call needs when the machine is oversubscribed.
      std::this_thread::yield();
    }
    spinner_.store(false);
  }
  if (!acquired) ready_.acquire();
  available_.fetch_sub(1);
  if (stopping_.load()) return nullptr;
  // Every release() follows a push(), so an item is there; the loop only
  // covers the window in which the pushing thread's node is not yet linked.
  WorkItem* item = nullptr;
  while (!queue_.pop(item)) std::this_thread::yield();
  return item;
}

void Scheduler::workerLoop() {
  while (WorkItem* item = next()) item->runOnWorker();
}

}  // namespace sandpool::pool
