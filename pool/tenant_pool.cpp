#include "pool/tenant_pool.h"

#include <malloc.h>
#include <algorithm>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace sandpool::pool {

namespace {

// Idle checks run often enough that a guest scales to zero within about a
// quarter of its idle time past the deadline, and at most once a second.
std::chrono::nanoseconds idleTick(std::chrono::nanoseconds idle) {
  return std::clamp<std::chrono::nanoseconds>(idle / 4, std::chrono::milliseconds(10),
                                              std::chrono::seconds(1));
}

}  // namespace

TenantPool::TenantPool(Scheduler& scheduler, vm::Backend& backend, boost::asio::io_context& io,
                       std::string name, Quota quota, std::chrono::nanoseconds idle_time)
    : scheduler_(scheduler),
      backend_(backend),
      name_(std::move(name)),
      quota_(quota),
      idle_time_(idle_time),
      pending_(quota.queue_length + 1),
      strand_(boost::asio::make_strand(io)),
      idle_timer_(strand_) {
  boost::asio::post(strand_, [this] { armIdleTimer(); });
}

TenantPool::~TenantPool() = default;

void TenantPool::submit(CallTask* task) {
  if (shutting_down_.load()) {
    task->outcome.refusal = Refusal{RefusalKind::kShuttingDown, "the server is shutting down"};
    task->complete();
    return;
  }
  // Reserve a queue place first, so that pending_ never holds more than
  // queue_length tasks and a refusal costs nothing but two atomics.
  if (queued_.fetch_add(1) >= quota_.queue_length) {
    queued_.fetch_sub(1);
    overloaded_.fetch_add(1, std::memory_order_relaxed);
    task->outcome.refusal = Refusal{
        RefusalKind::kOverloaded,
        fmt::format("tenant queue is full ({} calls waiting); retry later", quota_.queue_length)};
    task->complete();
    return;
  }
  scheduler_.callArrived();
  pending_.push(task);
  pending_count_.fetch_add(1);
  maybeSchedule();
}

void TenantPool::maybeSchedule() {
  // Exactly one ticket exists while scheduled_ is true. Whoever changes
  // pending_count_, running_ or long_calls_ calls this afterwards, so a
  // ticket is never missing while there is work and room to run it. A
  // ticket already queued when the tenant reaches its long calls still
  // runs one call, so a tenant has at most that number plus the workers
  // running at once.
  if (pending_count_.load() == 0 || running_.load() >= quota_.max_concurrent_calls ||
      long_calls_.load() >= scheduler_.maxLongCallsPerTenant()) {
    return;
  }
  bool expected = false;
  if (scheduled_.compare_exchange_strong(expected, true)) scheduler_.schedule(this);
}

void TenantPool::runOnWorker() {
  CallTask* task = nullptr;
  running_.fetch_add(1);
  bool got = pending_.pop(task);
  if (got) {
    pending_count_.fetch_sub(1);
    queued_.fetch_sub(1);
  }
  scheduled_.store(false);
  maybeSchedule();  // the ticket goes to the back of the queue: round robin
  if (!got) {
    taskFinished();
    return;
  }
  if (shutting_down_.load()) {
    refuseQueued(task);
    taskFinished();
    return;
  }
  std::shared_ptr<GuestPool> guest = task->guest;
  guest->run(task);
}

void TenantPool::taskFinished() {
  running_.fetch_sub(1);
  maybeSchedule();
}

void TenantPool::settingAside() { long_calls_.fetch_add(1); }

void TenantPool::setAsideEnded() {
  long_calls_.fetch_sub(1);
  maybeSchedule();
}

void TenantPool::dropUnrun() {
  scheduled_.store(false);
  CallTask* task = nullptr;
  while (pending_.pop(task)) {
    pending_count_.fetch_sub(1);
    queued_.fetch_sub(1);
    refuseQueued(task);
  }
}

void TenantPool::refuseQueued(CallTask* task) {
  task->outcome.refusal = Refusal{RefusalKind::kShuttingDown, "the server is shutting down"};
  scheduler_.callEnded();
  task->complete();
}

bool TenantPool::reserveVm(uint64_t memory_bytes) {
  uint32_t vms = vms_.load();
  do {
    if (vms >= quota_.max_vms) return false;
  } while (!vms_.compare_exchange_weak(vms, vms + 1));
  uint64_t memory = memory_bytes_.load();
  do {
    if (memory + memory_bytes > quota_.max_memory_bytes) {
      vms_.fetch_sub(1);
      return false;
    }
  } while (!memory_bytes_.compare_exchange_weak(memory, memory + memory_bytes));
  return true;
}

void TenantPool::releaseVm(uint64_t memory_bytes) {
  memory_bytes_.fetch_sub(memory_bytes);
  vms_.fetch_sub(1);
}

void TenantPool::addGuest(std::shared_ptr<GuestPool> guest) {
  {
    std::lock_guard lock(reclaimable_mutex_);
    std::erase_if(reclaimable_, [](const std::weak_ptr<GuestPool>& g) { return g.expired(); });
    reclaimable_.push_back(guest);
  }
  boost::asio::post(
      strand_, [this, guest = std::move(guest)]() mutable { guests_.push_back(std::move(guest)); });
}

void TenantPool::removeGuest(std::shared_ptr<GuestPool> guest) {
  {
    std::lock_guard lock(reclaimable_mutex_);
    std::erase_if(reclaimable_, [&guest](const std::weak_ptr<GuestPool>& g) {
      auto held = g.lock();
      return !held || held == guest;
    });
  }
  boost::asio::post(strand_, [this, guest = std::move(guest)] {
    std::erase(guests_, guest);
    guest->retire();
  });
}

bool TenantPool::reclaimIdleVmFor(const GuestPool& needy) {
  std::lock_guard lock(reclaimable_mutex_);
  for (const std::weak_ptr<GuestPool>& weak : reclaimable_) {
    std::shared_ptr<GuestPool> guest = weak.lock();
    if (!guest || guest.get() == &needy || !guest->dropOneIdleVm()) continue;
    spdlog::info("event=vm_reclaimed tenant={} from_guest={} for_guest={}", name_, guest->name(),
                 needy.name());
    return true;
  }
  return false;
}

void TenantPool::stop() {
  boost::asio::post(strand_, [this] {
    stopped_ = true;
    idle_timer_.cancel();
  });
}

void TenantPool::armIdleTimer() {
  if (stopped_) return;
  idle_timer_.expires_after(idleTick(idle_time_));
  idle_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    onIdleTick();
    armIdleTimer();
  });
}

void TenantPool::onIdleTick() {
  uint32_t dropped_here = 0;
  for (auto& guest : guests_) {
    uint32_t dropped = guest->scaleToZeroIfIdle(idle_time_);
    if (dropped > 0) {
      spdlog::info("event=scale_to_zero tenant={} guest={} vms_dropped={}", name_, guest->name(),
                   dropped);
    }
    dropped_here += dropped;
  }
  // Most of a VM's memory is the emulator's heap (about 0.9 MiB each); glibc
  // keeps freed heap in its arenas, so without this a server scaled to zero
  // still holds the private memory of every VM it had (docs/performance.md,
  // "Density").
  if (dropped_here > 0) malloc_trim(0);
}

TenantCounters TenantPool::counters() const {
  TenantCounters c;
  c.queued = pending_count_.load();
  c.running = running_.load();
  c.long_calls = long_calls_.load();
  c.vms = vms_.load();
  c.memory_bytes = memory_bytes_.load();
  c.overloaded = overloaded_.load();
  return c;
}

}  // namespace sandpool::pool
