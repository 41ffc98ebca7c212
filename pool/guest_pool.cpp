#include "pool/guest_pool.h"

#include <atomic>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "pool/tenant_pool.h"

namespace sandpool::pool {

namespace {

int64_t nowNs() { return Clock::now().time_since_epoch().count(); }

}  // namespace

GuestPool::GuestPool(TenantPool& tenant, std::string name,
                     std::shared_ptr<const vm::Snapshot> snapshot, PoolSettings settings)
    : tenant_(tenant),
      name_(std::move(name)),
      snapshot_(std::move(snapshot)),
      idle_(settings.max_vms + 1),
      waiting_(64),
      min_warm_(settings.min_warm),
      max_vms_(settings.max_vms),
      last_used_ns_(nowNs()) {}

GuestPool::~GuestPool() {
  // Only the last owner runs this, so no worker holds a VM or a task here.
  while (auto vm = popIdle()) dropVm(std::move(vm));
}

PoolSettings GuestPool::settings() const { return {min_warm_.load(), max_vms_.load()}; }

void GuestPool::setSettings(PoolSettings settings) {
  max_vms_.store(settings.max_vms);
  min_warm_.store(settings.min_warm);
  requestPrewarm();
}

bool GuestPool::reserveVm() {
  uint32_t count = vm_count_.load();
  do {
    if (count >= max_vms_.load()) return false;
  } while (!vm_count_.compare_exchange_weak(count, count + 1));
  if (!tenant_.reserveVm(snapshot_->config().memory_size)) {
    vm_count_.fetch_sub(1);
    return false;
  }
  return true;
}

void GuestPool::unreserveVm() {
  tenant_.releaseVm(snapshot_->config().memory_size);
  vm_count_.fetch_sub(1);
}

std::unique_ptr<vm::Sandbox> GuestPool::createVm(std::optional<vm::Error>& error) {
  if (retired_.load() || !reserveVm()) return nullptr;
  auto created = vm::Sandbox::create(tenant_.backend(), snapshot_);
  if (!created) {
    unreserveVm();
    spdlog::log(created.error().kind == vm::ErrorKind::kHostLimit ? spdlog::level::warn
                                                                   : spdlog::level::err,
                "event=vm_create_failed tenant={} guest={} error=\"{}\"", tenant_.name(), name_,
                created.error().describe());
    error = created.error();
    return nullptr;
  }
  created_.fetch_add(1, std::memory_order_relaxed);
  return std::move(created.value());
}

void GuestPool::dropVm(std::unique_ptr<vm::Sandbox> vm) {
  vm.reset();
  discarded_.fetch_add(1, std::memory_order_relaxed);
  unreserveVm();
}

std::unique_ptr<vm::Sandbox> GuestPool::popIdle() {
  vm::Sandbox* vm = nullptr;
  if (!idle_.pop(vm)) return nullptr;
  idle_count_.fetch_sub(1);
  return std::unique_ptr<vm::Sandbox>(vm);
}

CallTask* GuestPool::takeWaiting() {
  CallTask* task = nullptr;
  if (!waiting_.pop(task)) return nullptr;
  waiting_count_.fetch_sub(1);
  return task;
}

bool GuestPool::dropOneIdleVm() {
  auto vm = popIdle();
  if (!vm) return false;
  dropVm(std::move(vm));
  return true;
}

void GuestPool::parkOrRefuse(CallTask* task) {
  // Waiting only makes sense for a VM of this guest to come back. With none
  // at all, the limit hit was the tenant's, held by its other guests: an
  // idle VM of theirs gives way, a busy one is waited for by nobody.
  if (vm_count_.load() == 0 && tenant_.reclaimIdleVmFor(*this)) {
    std::optional<vm::Error> error;
    if (auto vm = createVm(error)) {
      serve(task, std::move(vm), true);
      return;
    }
    if (error) {
      refuseNoVm(task, *error);
      return;
    }
  }
  if (vm_count_.load() == 0) {
    refuse(task, RefusalKind::kVmQuota,
           fmt::format("the tenant's VM quota ({} VMs, {} MiB) is in use by its other guests",
                       tenant_.quota().max_vms, tenant_.quota().max_memory_bytes >> 20));
    return;
  }
  park(task);
}

void GuestPool::park(CallTask* task) {
  waiting_.push(task);
  waiting_count_.fetch_add(1);
  // A VM may have been made idle between our failed pop and the push above,
  // by a worker that saw no waiting call. Either it sees our count or we see
  // its VM: both sides publish, fence, then look at the other.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (retired_.load()) {
    refuseWaiting();
    return;
  }
  if (auto vm = popIdle()) {
    if (CallTask* next = takeWaiting()) {
      serve(next, std::move(vm), false);
    } else {
      putIdle(std::move(vm));
    }
  }
}

void GuestPool::putIdle(std::unique_ptr<vm::Sandbox> vm) {
  if (retired_.load()) {
    dropVm(std::move(vm));
    return;
  }
  idle_.push(vm.release());
  idle_count_.fetch_add(1);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (waiting_count_.load() == 0) return;
  if (auto again = popIdle()) {
    if (CallTask* next = takeWaiting()) {
      serve(next, std::move(again), false);
    } else {
      idle_.push(again.release());
      idle_count_.fetch_add(1);
    }
  }
}

void GuestPool::run(CallTask* task) {
  if (retired_.load()) {
    refuseRemoved(task);
    return;
  }
  if (task->wasCancelled()) {
    refuse(task, RefusalKind::kCancelled, "the caller cancelled the call before it ran");
    return;
  }
  last_used_ns_.store(nowNs(), std::memory_order_relaxed);
  bool cold = false;
  std::unique_ptr<vm::Sandbox> vm = popIdle();
  if (!vm) {
    std::optional<vm::Error> error;
    vm = createVm(error);
    if (error && error->kind == vm::ErrorKind::kHostLimit && vm_count_.load() > 0) {
      // No room for another VM, but this guest's busy ones come back.
      park(task);
      return;
    }
    if (error) {
      refuseNoVm(task, *error);
      return;
    }
    if (!vm) {
      parkOrRefuse(task);
      return;
    }
    cold = true;
    if (vm_count_.load() < min_warm_.load()) requestPrewarm();
  }
  serve(task, std::move(vm), cold);
}

void GuestPool::serve(CallTask* task, std::unique_ptr<vm::Sandbox> vm, bool cold) {
  vm = execute(task, std::move(vm), cold);
  while (CallTask* next = takeWaiting()) {
    if (retired_.load()) {
      refuseRemoved(next);
      continue;
    }
    if (tenant_.shuttingDown()) {
      refuse(next, RefusalKind::kShuttingDown, "the server is shutting down");
      continue;
    }
    cold = false;
    if (!vm) {
      // The last VM failed its reset: a waiting call needs a new one.
      std::optional<vm::Error> error;
      vm = createVm(error);
      if (error) {
        refuseNoVm(next, *error);
        continue;
      }
      if (!vm) {
        parkOrRefuse(next);
        return;
      }
      cold = true;
    }
    vm = execute(next, std::move(vm), cold);
  }
  if (vm) putIdle(std::move(vm));
}

std::unique_ptr<vm::Sandbox> GuestPool::execute(CallTask* task, std::unique_ptr<vm::Sandbox> vm,
                                                bool cold) {
  Clock::time_point start = Clock::now();
  task->outcome.queue_time = start - task->received;
  task->outcome.cold_start = cold;
  if (task->wasCancelled()) {
    refuse(task, RefusalKind::kCancelled, "the caller cancelled the call before it ran");
    return vm;
  }
  if (start >= task->deadline) {
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(start - task->received);
    task->outcome.call.result = vm::makeError(
        vm::ErrorKind::kTimeout,
        fmt::format("call waited {} ms for a VM and passed its deadline", waited.count()));
    timeouts_.fetch_add(1, std::memory_order_relaxed);
    failed_.fetch_add(1, std::memory_order_relaxed);
    finish(task);
    return vm;
  }
  // Stopped at the deadline set at receipt, passed down unchanged; the
  // timeout is only named in a timeout's message: the one the call was
  // given at receipt, queueing included.
  task->request.deadline = task->deadline;
  task->request.timeout = task->deadline - task->received;
  task->request.cancelled = task->cancelled.get();
  busy_.fetch_add(1);
  task->outcome.call = vm->call(task->request);
  busy_.fetch_sub(1);
  Clock::time_point end = Clock::now();
  last_used_ns_.store(end.time_since_epoch().count(), std::memory_order_relaxed);
  latency_.add(end - task->received);
  if (!task->outcome.call.result.ok()) {
    failed_.fetch_add(1, std::memory_order_relaxed);
    if (task->outcome.call.result.error().kind == vm::ErrorKind::kTimeout) {
      timeouts_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // Counters first, so that a client holding its result sees its call in
  // the stats; the VM goes back to the pool after the reply is on its way.
  bool healthy = vm->healthy();
  if (healthy) reset_.fetch_add(1, std::memory_order_relaxed);
  finish(task);
  if (!healthy) {
    spdlog::warn("event=vm_discarded tenant={} guest={} reason=reset_failed", tenant_.name(),
                 name_);
    dropVm(std::move(vm));
    return nullptr;
  }
  return vm;
}

void GuestPool::refuse(CallTask* task, RefusalKind kind, std::string message) {
  task->outcome.refusal = Refusal{kind, std::move(message)};
  failed_.fetch_add(1, std::memory_order_relaxed);
  finish(task);
}

void GuestPool::finish(CallTask* task) {
  calls_.fetch_add(1, std::memory_order_relaxed);
  TenantPool& tenant = tenant_;
  tenant.scheduler().callEnded();
  task->complete();
  tenant.taskFinished();
}

void GuestPool::requestPrewarm() {
  if (retired_.load() || vm_count_.load() >= min_warm_.load()) return;
  scheduleWorkerJob();
}

void GuestPool::scheduleWorkerJob() {
  bool expected = false;
  if (!prewarm_queued_.compare_exchange_strong(expected, true)) return;
  prewarm_keepalive_ = shared_from_this();
  tenant_.scheduler().schedule(this);
}

void GuestPool::runOnWorker() {
  std::shared_ptr<GuestPool> self = std::move(prewarm_keepalive_);
  prewarm_queued_.store(false);
  prewarmNow();
  // A call parked while the idle VMs were being dropped waits for a VM that
  // nobody will release: give it one (putIdle() runs waiting calls).
  if (waiting_count_.load() > 0 && idle_count_.load() == 0 && busy_.load() == 0) {
    std::optional<vm::Error> error;
    if (auto vm = createVm(error)) {
      putIdle(std::move(vm));
    } else if (error) {
      while (CallTask* task = takeWaiting()) {
        refuseNoVm(task, *error);
      }
    }
  }
}

void GuestPool::prewarmNow() {
  uint32_t made = 0;
  while (!retired_.load() && vm_count_.load() < min_warm_.load()) {
    std::optional<vm::Error> error;
    auto vm = createVm(error);
    if (!vm) break;
    ++made;
    putIdle(std::move(vm));
  }
  if (made > 0) {
    spdlog::info("event=prewarm tenant={} guest={} vms_created={} vms={}", tenant_.name(), name_,
                 made, vm_count_.load());
  }
}

void GuestPool::dropUnrun() { prewarm_keepalive_.reset(); }

uint32_t GuestPool::scaleToZeroIfIdle(std::chrono::nanoseconds idle) {
  // A guest with calls running or waiting is in use, whatever its clock
  // says; dropping its VMs could strand a waiting call.
  if (idle_count_.load() == 0 || busy_.load() > 0 || waiting_count_.load() > 0) return 0;
  if (nowNs() - last_used_ns_.load(std::memory_order_relaxed) < idle.count()) return 0;
  uint32_t dropped = 0;
  while (auto vm = popIdle()) {
    dropVm(std::move(vm));
    ++dropped;
  }
  // A call that arrived meanwhile may have parked, counting on a VM that
  // was just dropped.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (waiting_count_.load() > 0) scheduleWorkerJob();
  return dropped;
}

void GuestPool::retire() {
  retired_.store(true);
  while (auto vm = popIdle()) dropVm(std::move(vm));
  // Calls parked here are refused by the worker that releases the next VM;
  // if no VM is busy there is no such worker, so refuse them now.
  if (busy_.load() == 0) refuseWaiting();
}

void GuestPool::refuseWaiting() {
  while (CallTask* task = takeWaiting()) refuseRemoved(task);
}

void GuestPool::refuseNoVm(CallTask* task, const vm::Error& error) {
  // A host limit passes: VMs are dropped at scale-to-zero, so the caller may retry.
  refuse(task, error.kind == vm::ErrorKind::kHostLimit ? RefusalKind::kOverloaded : RefusalKind::kNoVm,
         fmt::format("could not create a VM: {}", error.message));
}

void GuestPool::refuseRemoved(CallTask* task) {
  refuse(task, RefusalKind::kGuestRemoved,
         fmt::format("guest '{}' was removed or replaced", name_));
}

GuestStats GuestPool::stats() const {
  GuestStats s;
  s.warm = idle_count_.load();
  s.busy = busy_.load();
  s.waiting = waiting_count_.load();
  s.created = created_.load();
  s.reset = reset_.load();
  s.discarded = discarded_.load();
  s.failed = failed_.load();
  s.timeouts = timeouts_.load();
  s.calls = calls_.load();
  s.latency = latency_.snapshot();
  s.snapshot_bytes = snapshot_->residentPages() * vm::kPageSize;
  return s;
}

}  // namespace sandpool::pool
