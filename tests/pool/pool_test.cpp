// pool/: tenant pools, guest pools and the worker scheduler, on real VMs.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "pool/guest_pool.h"
#include "pool/latency_histogram.h"
#include "pool/scheduler.h"
#include "pool/spin_wait.h"
#include "pool/tenant_pool.h"
#include "tests/vm/holding_host_functions.h"
#include "vm/backend.h"
#include "vm/guest_image.h"
#include "vm/snapshot.h"

namespace sandpool::pool {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<const vm::Snapshot> boot(vm::Backend& backend, const char* path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> elf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  vm::VmConfig config;
  config.memory_size = 16 * vm::kMiB;
  auto image = vm::GuestImage::parse(elf, config);
  EXPECT_TRUE(image.ok()) << image.error().describe();
  auto snapshot = vm::Snapshot::boot(backend, image.value(), config);
  EXPECT_TRUE(snapshot.ok()) << snapshot.error().describe();
  return snapshot.value();
}

// Records completions in order; tests wait for a count.
class Completions {
 public:
  void record(int id, CallOutcome outcome) {
    std::lock_guard lock(mutex_);
    order_.push_back(id);
    outcomes_.push_back(std::move(outcome));
    changed_.notify_all();
  }
  bool waitFor(size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return order_.size() >= n; });
  }
  std::vector<int> order() {
    std::lock_guard lock(mutex_);
    return order_;
  }
  std::vector<CallOutcome> outcomes() {
    std::lock_guard lock(mutex_);
    return outcomes_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<int> order_;
  std::vector<CallOutcome> outcomes_;
};

class TestTask final : public CallTask {
 public:
  TestTask(Completions& done, int id) : done_(done), id_(id) {}
  void complete() override {
    done_.record(id_, std::move(outcome));
    delete this;
  }

 private:
  Completions& done_;
  int id_;
};

// The real emulated backend, except that its vCPUs fail their next resets
// when told to. A guest cannot make a reset fail, yet the pool must replace
// a VM whose reset did.
class ResetFailingBackend final : public vm::Backend {
 public:
  explicit ResetFailingBackend(vm::Backend& real) : real_(real) {}

  void failNextResets(int count) { failures_.store(count); }

  vm::BackendKind kind() const override { return real_.kind(); }
  vm::Expected<void> prepareImage(std::span<uint8_t> image,
                                  const vm::MemoryLayout& layout) override {
    return real_.prepareImage(image, layout);
  }
  vm::Expected<std::unique_ptr<vm::MicroVm>> createMicroVm(vm::GuestMemory& memory,
                                                           const vm::MemoryLayout& layout,
                                                           uint64_t entry) override {
    auto vcpu = real_.createMicroVm(memory, layout, entry);
    if (!vcpu) return vcpu.takeError();
    return std::unique_ptr<vm::MicroVm>(
        std::make_unique<MicroVm>(std::move(vcpu.value()), failures_));
  }

 private:
  class MicroVm final : public vm::MicroVm {
   public:
    MicroVm(std::unique_ptr<vm::MicroVm> real, std::atomic<int>& failures)
        : real_(std::move(real)), failures_(failures) {}
    vm::RunExit run(vm::PortHandler& handler) override { return real_->run(handler); }
    void interrupt() noexcept override { real_->interrupt(); }
    void clearInterrupt() noexcept override { real_->clearInterrupt(); }
    vm::Expected<uint64_t> readRegister(vm::Register reg) override {
      return real_->readRegister(reg);
    }
    vm::Expected<std::unique_ptr<vm::CpuState>> saveCpuState(uint64_t resume_rip) override {
      return real_->saveCpuState(resume_rip);
    }
    vm::Expected<void> loadCpuState(const vm::CpuState& state) override {
      return real_->loadCpuState(state);
    }
    vm::Expected<void> armReset(std::span<const uint8_t> contents) override {
      return real_->armReset(contents);
    }
    vm::Expected<vm::ResetStats> reset() override {
      int left = failures_.load();
      while (left > 0 && !failures_.compare_exchange_weak(left, left - 1)) {
      }
      if (left > 0)
        return vm::makeError(vm::ErrorKind::kResetFailed, "reset failure injected by the test");
      return real_->reset();
    }

   private:
    std::unique_ptr<vm::MicroVm> real_;
    std::atomic<int>& failures_;
  };

  vm::Backend& real_;
  std::atomic<int> failures_{0};
};

class PoolTest : public ::testing::Test {
 protected:
  // Long calls step aside only where a test asks for it: the others order
  // their queues by holding a call on the one worker.
  void start(unsigned workers, std::chrono::microseconds long_call = 0us,
             unsigned long_calls_per_tenant = 64) {
    scheduler_ = std::make_unique<Scheduler>(
        SchedulerOptions{workers, 0us, long_call, 256, long_calls_per_tenant});
    scheduler_->start();
    io_thread_ = std::thread([this] { io_.run(); });
  }
  ~PoolTest() override {
    if (scheduler_) scheduler_->stop();
    for (auto& t : tenants_) t->stop();
    work_.reset();
    if (io_thread_.joinable()) io_thread_.join();
  }

  TenantPool& tenant(const std::string& name, Quota quota = {}) {
    return tenantOn(*backend_, name, quota);
  }
  TenantPool& tenantOn(vm::Backend& backend, const std::string& name, Quota quota = {}) {
    // Idle VMs are dropped by the tests themselves (scaleToZeroIfIdle), never
    // by the timer behind a test's back on a slow machine.
    tenants_.push_back(std::make_unique<TenantPool>(*scheduler_, backend, io_, name, quota, 1h));
    return *tenants_.back();
  }

  // Submits `count` calls add(i, 1) at once and checks that every one
  // completes with i + 1, whatever order they finish in.
  void submitAddsAndExpectEachResult(TenantPool& tenant, const std::shared_ptr<GuestPool>& guest,
                                     int count) {
    for (int i = 0; i < count; ++i) submit(tenant, guest, i, "add", {int32_t(i), int32_t(1)});
    ASSERT_TRUE(done_.waitFor(static_cast<size_t>(count), 30s));
    auto outcomes = done_.outcomes();
    auto order = done_.order();
    for (size_t k = 0; k < outcomes.size(); ++k) {
      ASSERT_FALSE(outcomes[k].refusal) << outcomes[k].refusal->message;
      ASSERT_TRUE(outcomes[k].call.result.ok()) << outcomes[k].call.result.error().describe();
      EXPECT_EQ(std::get<int32_t>(outcomes[k].call.result.value()), order[k] + 1);
    }
  }

  // Waits (bounded) until `done` holds; the pool updates its counters on
  // worker threads, just after the completions the test waits for.
  template <typename Predicate>
  static bool eventually(Predicate done) {
    auto until = Clock::now() + 20s;
    while (!done() && Clock::now() < until) std::this_thread::yield();
    return done();
  }

  void submit(TenantPool& tenant, std::shared_ptr<GuestPool> guest, int id, std::string function,
              std::vector<vm::Value> args, std::chrono::milliseconds timeout = 120s,
              vm::HostFunctions* host = nullptr) {
    auto* task = new TestTask(done_, id);
    task->guest = std::move(guest);
    task->request.function = std::move(function);
    task->request.args = std::move(args);
    task->request.host_functions = host;
    task->received = Clock::now();
    task->deadline = task->received + timeout;
    tenant.submit(task);
  }

  std::unique_ptr<vm::Backend> backend_ = vm::makeEmulatedBackend();
  ResetFailingBackend faulty_backend_{*backend_};  // outlives the workers, like backend_
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_ =
      boost::asio::make_work_guard(io_);
  std::thread io_thread_;
  std::unique_ptr<Scheduler> scheduler_;
  Completions done_;
  std::vector<std::unique_ptr<TenantPool>> tenants_;
};

TEST(LatencyHistogramTest, QuantilesReportTheBucketBound) {
  LatencyHistogram h;
  for (int i = 0; i < 98; ++i) h.add(15us);
  h.add(3ms);
  h.add(3ms);
  auto s = h.snapshot();
  EXPECT_EQ(s.total(), 100u);
  EXPECT_EQ(s.quantileUs(0.5), 20u);
  EXPECT_EQ(s.quantileUs(0.98), 20u);
  EXPECT_EQ(s.quantileUs(0.99), 5000u);
  EXPECT_EQ(s.sum_ns, 98u * 15000u + 2u * 3000000u);
  EXPECT_EQ(LatencyHistogram().snapshot().quantileUs(0.5), 0u);
}

TEST(SchedulerTest, LoadIsLightOnlyWhileCallsArriveAlone) {
  Scheduler scheduler({1, 0us});
  auto lone_calls = [&](int n) {
    for (int i = 0; i < n; ++i) {
      scheduler.callArrived();
      scheduler.callEnded();
    }
  };
  EXPECT_FALSE(scheduler.lightlyLoaded());
  lone_calls(Scheduler::kLightAfter - 1);
  EXPECT_FALSE(scheduler.lightlyLoaded());
  lone_calls(1);
  EXPECT_TRUE(scheduler.lightlyLoaded());
  scheduler.callArrived();
  EXPECT_TRUE(scheduler.lightlyLoaded());
  scheduler.callArrived();
  EXPECT_FALSE(scheduler.lightlyLoaded());
  scheduler.callEnded();
  scheduler.callEnded();
  // Idle now, but the latest call queued behind another: more may follow.
  EXPECT_FALSE(scheduler.lightlyLoaded());
  lone_calls(Scheduler::kLightAfter);
  EXPECT_TRUE(scheduler.lightlyLoaded());
}

TEST(SpinWaitTest, TurnsUntilTheBudgetIsSpent) {
  SpinWait spent(0us, SpinMode::eager);
  EXPECT_FALSE(spent.turn());
  SpinWait eager(10s, SpinMode::eager);
  EXPECT_TRUE(eager.turn());
  // A polite wait ends at its own cap, however long the budget asked for
  // (whether its first turn still fits the cap depends on the scheduler).
  SpinWait polite(10s, SpinMode::polite);
  const auto began = SpinWait::Clock::now();
  while (polite.turn()) {
  }
  EXPECT_LT(SpinWait::Clock::now() - began, 5s);
  spent.restart(SpinMode::polite);
  EXPECT_FALSE(spent.turn());
  SpinWait none(10s, SpinMode::none);
  EXPECT_FALSE(none.turn());
  none.restart(SpinMode::none);
  EXPECT_FALSE(none.turn());
}

TEST_F(PoolTest, CallsBeyondTheVmLimitWaitAndAllSucceed) {
  start(4);
  TenantPool& t = tenant("t");
  auto guest =
      std::make_shared<GuestPool>(t, "add", boot(*backend_, GUEST_ADD), PoolSettings{0, 1});
  submitAddsAndExpectEachResult(t, guest, 40);
  GuestStats s = guest->stats();
  EXPECT_EQ(s.created, 1u);
  EXPECT_EQ(s.calls, 40u);
  EXPECT_EQ(s.reset, 40u);
  // The last worker returns the VM just after completing the last call.
  auto until = Clock::now() + 10s;
  while (guest->stats().warm != 1 && Clock::now() < until) std::this_thread::yield();
  EXPECT_EQ(guest->stats().warm, 1u);
}

TEST_F(PoolTest, EveryCallEndsItsShareOfTheLoad) {
  start(2);
  TenantPool& t = tenant("t", Quota{.queue_length = 8});
  auto guest =
      std::make_shared<GuestPool>(t, "add", boot(*backend_, GUEST_ADD), PoolSettings{0, 2});
  // Calls that run, wait for a VM, are refused (queue full) or fail (bad
  // arguments): once all are done, calls arriving one at a time find no
  // load.
  for (int i = 0; i < 12; ++i) submit(t, guest, i, "add", {int32_t(i), int32_t(1)});
  submit(t, guest, 12, "add", {int32_t(1)});
  ASSERT_TRUE(done_.waitFor(13, 30s));
  for (int i = 0; i < Scheduler::kLightAfter; ++i) {
    submit(t, guest, 13 + i, "add", {int32_t(1), int32_t(1)});
    ASSERT_TRUE(done_.waitFor(14 + static_cast<size_t>(i), 30s));
  }
  EXPECT_TRUE(scheduler_->lightlyLoaded());
}

TEST_F(PoolTest, TenantsWithPendingCallsTakeTurns) {
  start(1);
  TenantPool& a = tenant("a");
  TenantPool& b = tenant("b");
  TenantPool& c = tenant("c");
  auto snapshot = boot(*backend_, GUEST_MISBEHAVE);
  auto ga = std::make_shared<GuestPool>(a, "m", snapshot, PoolSettings{0, 2});
  auto gb = std::make_shared<GuestPool>(b, "m", snapshot, PoolSettings{0, 2});
  auto gc = std::make_shared<GuestPool>(c, "p", boot(*backend_, GUEST_PROBE), PoolSettings{0, 1});
  // c's call holds the one worker until every call below is queued, so the
  // order they run in is the scheduler's alone, whatever this thread's pace.
  testing::HoldingHostFunctions holder;
  submit(c, gc, 200, "call_host", {std::string("hold"), std::string("")}, 120s, &holder);
  holder.waitUntilEntered();
  // Tenant a queues 12 calls that each spin until their 30 ms deadline; b's
  // one call arrives after them and must not wait for all of a's.
  for (int i = 0; i < 12; ++i) submit(a, ga, i, "spin", {}, 30ms * (i + 2));
  submit(b, gb, 100, "divide", {int32_t(8), int32_t(2)});
  holder.release();
  ASSERT_TRUE(done_.waitFor(14, 30s));
  auto order = done_.order();
  ASSERT_EQ(order.front(), 200);
  size_t b_position = std::find(order.begin(), order.end(), 100) - order.begin() - 1;
  EXPECT_LE(b_position, 1u) << "b's call completed after " << b_position << " of a's";
}

// Long calls step aside: tenant a's calls spin until their deadline, three
// times as many as there are workers. They all start (the first ones step
// aside for the next), and b's call, arriving after them, completes while
// every one of a's is still running, not after the first of them times out.
TEST_F(PoolTest, SpinningCallsOfOneTenantDoNotHoldTheWorkersFromAnother) {
  start(2, 5ms);
  TenantPool& a = tenant("a");
  TenantPool& b = tenant("b");
  auto snapshot = boot(*backend_, GUEST_MISBEHAVE);
  auto ga = std::make_shared<GuestPool>(a, "m", snapshot, PoolSettings{0, 6});
  auto gb = std::make_shared<GuestPool>(b, "m", snapshot, PoolSettings{0, 1});
  for (int i = 0; i < 6; ++i) submit(a, ga, i, "spin", {}, 10s);
  ASSERT_TRUE(eventually([&] { return ga->stats().busy == 6; })) << "a's six calls all started";
  EXPECT_GE(scheduler_->longCallsSetAside(), 4u) << "at most two of them on the workers";
  submit(b, gb, 100, "divide", {int32_t(8), int32_t(2)});
  ASSERT_TRUE(done_.waitFor(1, 60s));
  EXPECT_EQ(done_.order().front(), 100) << "b's call waited for one of a's to time out";
  EXPECT_EQ(ga->stats().busy, 6u) << "a's calls are all still running";
  ASSERT_TRUE(done_.waitFor(7, 60s));
  const auto outcomes = done_.outcomes();
  ASSERT_FALSE(outcomes[0].refusal);
  EXPECT_EQ(std::get<int32_t>(outcomes[0].call.result.value()), 4);
  for (size_t k = 1; k < outcomes.size(); ++k) {
    ASSERT_FALSE(outcomes[k].refusal) << outcomes[k].refusal->message;
    ASSERT_FALSE(outcomes[k].call.result.ok());
    EXPECT_EQ(outcomes[k].call.result.error().kind, vm::ErrorKind::kTimeout);
  }
  // A thread set aside ends with its call.
  EXPECT_TRUE(eventually([&] { return scheduler_->longCallsRunning() == 0; }));
}

// A tenant with its share of long calls set aside starts no more: with one
// worker and two long calls per tenant, a's calls that spin stop at three
// running (the third was taken before the second stepped aside) and the
// rest wait in a's queue, while b's call runs.
TEST_F(PoolTest, ATenantsLongCallsAreCappedAndItsOtherCallsWait) {
  start(1, 5ms, 2);
  TenantPool& a = tenant("a");
  TenantPool& b = tenant("b");
  auto snapshot = boot(*backend_, GUEST_MISBEHAVE);
  auto ga = std::make_shared<GuestPool>(a, "m", snapshot, PoolSettings{0, 6});
  auto gb = std::make_shared<GuestPool>(b, "m", snapshot, PoolSettings{0, 1});
  for (int i = 0; i < 6; ++i) submit(a, ga, i, "spin", {}, 10s);
  ASSERT_TRUE(eventually([&] { return a.counters().long_calls == 3; }));
  submit(b, gb, 100, "divide", {int32_t(8), int32_t(2)});
  ASSERT_TRUE(done_.waitFor(1, 60s));
  EXPECT_EQ(done_.order().front(), 100);
  const TenantCounters counters = a.counters();
  EXPECT_EQ(counters.running, 3u);
  EXPECT_EQ(counters.queued, 3u);
  // A call counts as busy once its VM is created, which a set-aside call
  // may still be doing.
  EXPECT_TRUE(eventually([&] { return ga->stats().busy == 3; }));
  // As a's calls time out, the waiting ones run, three at a time.
  ASSERT_TRUE(done_.waitFor(7, 60s));
  EXPECT_EQ(a.counters().queued, 0u);
}

// A call waiting on a slow host function steps aside like a spinning one:
// with one worker, b's call completes while a's is held in the host, and
// a's call, set aside meanwhile, still gets its answer.
TEST_F(PoolTest, ACallWaitingOnItsHostStepsAsideAndCompletes) {
  start(1, 5ms);
  TenantPool& a = tenant("a");
  TenantPool& b = tenant("b");
  auto ga = std::make_shared<GuestPool>(a, "p", boot(*backend_, GUEST_PROBE), PoolSettings{0, 1});
  auto gb = std::make_shared<GuestPool>(b, "add", boot(*backend_, GUEST_ADD), PoolSettings{0, 1});
  testing::HoldingHostFunctions holder;
  submit(a, ga, 0, "call_host", {std::string("hold"), std::string("")}, 120s, &holder);
  holder.waitUntilEntered();
  submit(b, gb, 1, "add", {int32_t(40), int32_t(2)});
  ASSERT_TRUE(done_.waitFor(1, 60s));
  EXPECT_EQ(done_.order().front(), 1);
  // b's call may have stepped aside too on a loaded machine (its VM is a
  // cold start); its thread ends just after the call completes.
  EXPECT_TRUE(eventually([&] { return scheduler_->longCallsRunning() == 1; }));
  EXPECT_EQ(scheduler_->spinMode(), SpinMode::none)
      << "a yield could hand the core to the long call";
  holder.release();
  ASSERT_TRUE(done_.waitFor(2, 60s));
  const auto outcomes = done_.outcomes();
  ASSERT_TRUE(outcomes[0].call.result.ok()) << outcomes[0].call.result.error().describe();
  EXPECT_EQ(std::get<int32_t>(outcomes[0].call.result.value()), 42);
  ASSERT_TRUE(outcomes[1].call.result.ok()) << outcomes[1].call.result.error().describe();
  EXPECT_EQ(std::get<std::string>(outcomes[1].call.result.value()), "released");
  EXPECT_GE(scheduler_->longCallsSetAside(), 1u);
  EXPECT_TRUE(eventually([&] { return scheduler_->longCallsRunning() == 0; }));
  // The worker that took the set-aside one's place serves the next call.
  submit(b, gb, 2, "add", {int32_t(1), int32_t(2)});
  ASSERT_TRUE(done_.waitFor(3, 60s));
  EXPECT_EQ(std::get<int32_t>(done_.outcomes()[2].call.result.value()), 3);
}

// A call's timeout counts from its receipt: one that spent most of it in
// the queue is stopped at its deadline, and the message names the timeout
// it was given, not what was left of it when it started.
TEST_F(PoolTest, TimeoutMessageNamesTheTimeoutTheCallWasGiven) {
  start(1);
  TenantPool& t = tenant("t");
  auto guest =
      std::make_shared<GuestPool>(t, "m", boot(*backend_, GUEST_MISBEHAVE), PoolSettings{0, 1});
  auto* task = new TestTask(done_, 0);
  task->guest = guest;
  task->request.function = "spin";
  // Received 300 ms ago (as if it had queued that long), with 400 ms to run.
  task->received = Clock::now() - 300ms;
  task->deadline = task->received + 400ms;
  t.submit(task);
  ASSERT_TRUE(done_.waitFor(1, 30s));
  const CallOutcome outcome = done_.outcomes()[0];
  ASSERT_FALSE(outcome.refusal);
  ASSERT_FALSE(outcome.call.result.ok());
  EXPECT_EQ(outcome.call.result.error().kind, vm::ErrorKind::kTimeout);
  EXPECT_NE(outcome.call.result.error().message.find("exceeded its 400 ms timeout"),
            std::string::npos)
      << outcome.call.result.error().message;
}

TEST_F(PoolTest, FullQueueRefusesAtOnce) {
  start(1);
  Quota quota;
  quota.max_concurrent_calls = 1;
  quota.queue_length = 3;
  TenantPool& t = tenant("t", quota);
  auto guest =
      std::make_shared<GuestPool>(t, "m", boot(*backend_, GUEST_MISBEHAVE), PoolSettings{0, 1});
  auto prober =
      std::make_shared<GuestPool>(t, "p", boot(*backend_, GUEST_PROBE), PoolSettings{0, 1});
  // The tenant's one running call is held until all ten are submitted: three
  // wait, seven are refused, however slowly this thread submits them.
  testing::HoldingHostFunctions holder;
  submit(t, prober, 100, "call_host", {std::string("hold"), std::string("")}, 120s, &holder);
  holder.waitUntilEntered();
  for (int i = 0; i < 10; ++i) submit(t, guest, i, "spin", {}, 100ms);
  ASSERT_TRUE(done_.waitFor(7, 30s));
  holder.release();
  ASSERT_TRUE(done_.waitFor(11, 30s));
  int overloaded = 0;
  for (auto& o : done_.outcomes()) {
    if (o.refusal && o.refusal->kind == RefusalKind::kOverloaded) ++overloaded;
  }
  EXPECT_EQ(overloaded, 7);
  EXPECT_EQ(t.counters().overloaded, static_cast<uint64_t>(overloaded));
}

TEST_F(PoolTest, PrewarmCreatesMinWarmAndIdleVmsScaleToZero) {
  start(2);
  TenantPool& t = tenant("t");
  auto guest =
      std::make_shared<GuestPool>(t, "add", boot(*backend_, GUEST_ADD), PoolSettings{3, 4});
  guest->requestPrewarm();
  auto until = Clock::now() + 20s;
  while (guest->stats().warm < 3 && Clock::now() < until) std::this_thread::yield();
  EXPECT_EQ(guest->stats().warm, 3u);
  EXPECT_EQ(guest->stats().created, 3u);
  EXPECT_EQ(guest->scaleToZeroIfIdle(1h), 0u) << "not idle for an hour yet";
  EXPECT_EQ(guest->scaleToZeroIfIdle(0ns), 3u);
  EXPECT_EQ(guest->stats().warm, 0u);
  EXPECT_EQ(guest->stats().discarded, 3u);
  EXPECT_EQ(t.counters().vms, 0u);
}

TEST_F(PoolTest, VmWhoseResetFailedIsDroppedAndReplaced) {
  start(1);
  TenantPool& t = tenantOn(faulty_backend_, "t");
  auto guest =
      std::make_shared<GuestPool>(t, "add", boot(*backend_, GUEST_ADD), PoolSettings{1, 1});
  guest->requestPrewarm();
  ASSERT_TRUE(eventually([&] { return guest->stats().warm == 1; }));

  faulty_backend_.failNextResets(1);
  submit(t, guest, 0, "add", {int32_t(40), int32_t(2)});
  ASSERT_TRUE(done_.waitFor(1, 30s));
  // The call ran before the reset failed: its result stands.
  ASSERT_TRUE(done_.outcomes()[0].call.result.ok());
  EXPECT_EQ(std::get<int32_t>(done_.outcomes()[0].call.result.value()), 42);
  ASSERT_TRUE(eventually([&] { return guest->stats().discarded == 1; }));
  EXPECT_EQ(guest->stats().warm, 0u) << "the VM that failed its reset must not serve again";
  EXPECT_EQ(guest->stats().reset, 0u);

  submit(t, guest, 1, "add", {int32_t(1), int32_t(2)});
  ASSERT_TRUE(done_.waitFor(2, 30s));
  ASSERT_TRUE(done_.outcomes()[1].call.result.ok())
      << done_.outcomes()[1].call.result.error().describe();
  EXPECT_EQ(std::get<int32_t>(done_.outcomes()[1].call.result.value()), 3);
  EXPECT_TRUE(done_.outcomes()[1].cold_start);
  EXPECT_EQ(guest->stats().created, 2u);
  EXPECT_TRUE(eventually([&] { return guest->stats().warm == 1; }));
  EXPECT_EQ(t.counters().vms, 1u);
}

TEST_F(PoolTest, WaitingCallsGetANewVmWhenTheOnlyOneFailsItsReset) {
  start(2);
  TenantPool& t = tenantOn(faulty_backend_, "t");
  auto guest =
      std::make_shared<GuestPool>(t, "add", boot(*backend_, GUEST_ADD), PoolSettings{0, 1});
  faulty_backend_.failNextResets(1);
  // One VM at most: the calls queue behind the first, whose reset fails.
  submitAddsAndExpectEachResult(t, guest, 10);
  EXPECT_EQ(guest->stats().created, 2u);
  EXPECT_EQ(guest->stats().reset, 9u);
  EXPECT_TRUE(
      eventually([&] { return guest->stats().discarded == 1 && guest->stats().warm == 1; }));
  EXPECT_EQ(t.counters().vms, 1u);
}

TEST_F(PoolTest, IdleVmsOfOneGuestGiveWayToAnotherGuestsCall) {
  start(2);
  Quota quota;
  quota.max_vms = 2;
  TenantPool& t = tenant("t", quota);
  auto snapshot = boot(*backend_, GUEST_ADD);
  auto g1 = std::make_shared<GuestPool>(t, "one", snapshot, PoolSettings{2, 2});
  auto g2 = std::make_shared<GuestPool>(t, "two", snapshot, PoolSettings{2, 2});
  t.addGuest(g1);
  t.addGuest(g2);
  g1->requestPrewarm();
  ASSERT_TRUE(eventually([&] { return g1->stats().warm == 2; }));
  // The tenant's two VMs are `one`'s, idle: one of them gives way.
  submit(t, g2, 1, "add", {int32_t(1), int32_t(2)});
  ASSERT_TRUE(done_.waitFor(1, 30s));
  auto outcome = done_.outcomes()[0];
  ASSERT_FALSE(outcome.refusal) << outcome.refusal->message;
  EXPECT_EQ(std::get<int32_t>(outcome.call.result.value()), 3);
  EXPECT_TRUE(outcome.cold_start);
  EXPECT_EQ(g1->stats().warm, 1u);
  EXPECT_EQ(g1->stats().discarded, 1u);
  EXPECT_EQ(t.counters().vms, 2u);
}

TEST_F(PoolTest, TenantVmQuotaHeldByRunningCallsRefusesAnotherGuest) {
  start(3);  // two held by the calls below, one for `two`'s call
  Quota quota;
  quota.max_vms = 2;
  TenantPool& t = tenant("t", quota);
  auto g1 = std::make_shared<GuestPool>(t, "one", boot(*backend_, GUEST_PROBE), PoolSettings{0, 2});
  auto g2 = std::make_shared<GuestPool>(t, "two", boot(*backend_, GUEST_ADD), PoolSettings{0, 2});
  t.addGuest(g1);
  t.addGuest(g2);
  // Both of the tenant's VMs run `one`'s calls, held inside a host function.
  testing::HoldingHostFunctions first, second;
  submit(t, g1, 10, "call_host", {std::string("hold"), std::string("")}, 120s, &first);
  submit(t, g1, 11, "call_host", {std::string("hold"), std::string("")}, 120s, &second);
  first.waitUntilEntered();
  second.waitUntilEntered();
  // No VM for `two` and none will come back to it: refused, not parked.
  submit(t, g2, 1, "add", {int32_t(1), int32_t(2)});
  const bool answered = done_.waitFor(1, 30s);
  first.release();
  second.release();
  ASSERT_TRUE(answered);
  auto outcome = done_.outcomes()[0];
  ASSERT_TRUE(outcome.refusal) << "ran: "
                               << (outcome.call.result.ok()
                                       ? "ok"
                                       : outcome.call.result.error().describe());
  EXPECT_EQ(outcome.refusal->kind, RefusalKind::kVmQuota) << outcome.refusal->message;
  ASSERT_TRUE(done_.waitFor(3, 30s));
  // Once `one`'s VMs are idle, `two`'s call gets one of them.
  submit(t, g2, 2, "add", {int32_t(1), int32_t(2)});
  ASSERT_TRUE(done_.waitFor(4, 30s));
  auto last = done_.outcomes()[3];
  ASSERT_FALSE(last.refusal) << last.refusal->message;
  EXPECT_EQ(std::get<int32_t>(last.call.result.value()), 3);
}

}  // namespace
}  // namespace sandpool::pool
