// The whole call path on KVM (Sandbox::call: request, run, host calls, result,
// reset), counted in system calls with the kernel's syscall tracepoints: the
// figures docs/performance.md quotes. Needs /dev/kvm and the right to open
// tracepoints; skipped without them unless SANDPOOL_REQUIRE_KVM is set.
#include <gtest/gtest.h>
#include <linux/kvm.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <vector>

#include "bench/vm/kvm_syscall_counter.h"
#include "guest_files.h"
#include "vm/backend.h"
#include "vm/guest_image.h"
#include "vm/sandbox.h"
#include "vm/snapshot.h"

namespace sandpool::vm {
namespace {

// Far beyond any run, KVM inside QEMU included: these tests count system
// calls, not time.
constexpr std::chrono::seconds kGenerousTimeout{120};

class Echo final : public HostFunctions {
 public:
  Expected<Value> callHostFunction(std::string_view, std::span<const Value> args) override {
    return args.empty() ? Value(Void{}) : args[0];
  }
};

struct Counts {
  uint64_t syscalls = 0;
  uint64_t kvm_runs = 0;
};

// One line of the test's output per measured call, for the log.
void print(const char* what, const Counts& c) {
  std::printf("%s: %llu syscalls, %llu KVM_RUN\n", what,
              static_cast<unsigned long long>(c.syscalls),
              static_cast<unsigned long long>(c.kvm_runs));
}

class KvmSandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const bool required = std::getenv("SANDPOOL_REQUIRE_KVM") != nullptr;
    auto backend = makeKvmBackend(KvmOptions::fromEnvironment());
    if (!backend) {
      if (required) FAIL() << "KVM required but unavailable: " << backend.error().message;
      GTEST_SKIP() << "no usable /dev/kvm: " << backend.error().message;
    }
    backend_ = std::move(*backend);
    std::string why_not;
    all_ = bench::SyscallCounter::allSyscalls(why_not);
    if (all_) kvm_run_ = bench::SyscallCounter::ioctls(KVM_RUN, why_not);
    if (!all_ || !kvm_run_) {
      if (required) FAIL() << why_not;
      GTEST_SKIP() << "cannot count syscalls: " << why_not;
    }
    VmConfig config;
    auto image = GuestImage::parse(sandpool::testing::readGuest("probe"), config);
    ASSERT_TRUE(image.ok()) << image.error().describe();
    auto snapshot = Snapshot::boot(*backend_, *image, config);
    ASSERT_TRUE(snapshot.ok()) << snapshot.error().describe();
    auto sandbox = Sandbox::create(*backend_, *snapshot);
    ASSERT_TRUE(sandbox.ok()) << sandbox.error().describe();
    sandbox_ = std::move(*sandbox);
  }

  // Counts one call's syscalls on this thread. The request is built before
  // the window opens: the counts are those of Sandbox::call itself.
  Counts countCall(const CallRequest& request) {
    const uint64_t before_all = all_->read();
    const uint64_t before_runs = kvm_run_->read();
    CallResult result = sandbox_->call(request);
    const uint64_t after_runs = kvm_run_->read();
    const uint64_t after_all = all_->read();
    EXPECT_TRUE(result.result.ok()) << result.result.error().describe();
    EXPECT_TRUE(sandbox_->healthy());
    // Less the two reads of the KVM_RUN counter inside the window.
    return {after_all - before_all - 2, after_runs - before_runs};
  }

  // Several warm calls; the first calls of a thread (signal mask, page-ins)
  // are not warm and are left out.
  std::vector<Counts> countWarmCalls(const CallRequest& request, int calls = 5) {
    for (int i = 0; i < 2; ++i) sandbox_->call(request);
    std::vector<Counts> counts;
    for (int i = 0; i < calls; ++i) counts.push_back(countCall(request));
    return counts;
  }

  static uint64_t fewestSyscalls(const std::vector<Counts>& counts) {
    uint64_t fewest = UINT64_MAX;
    for (const Counts& c : counts) fewest = std::min(fewest, c.syscalls);
    return fewest;
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Sandbox> sandbox_;
  std::optional<bench::SyscallCounter> all_;
  std::optional<bench::SyscallCounter> kvm_run_;
  Echo echo_;
};

// KVM_RUN, then reset: KVM_GET_DIRTY_LOG, KVM_SET_XSAVE, KVM_SET_DEBUGREGS.
// A call whose deadline comes before the watchdog's next planned look (the
// first call after an idle spell) also wakes it: one futex call more.
TEST_F(KvmSandboxTest, WarmCallTakesFourSyscallsIncludingReset) {
  CallRequest request;
  request.function = "heap_bytes";
  request.startTimeout(kGenerousTimeout);
  const auto counts = countWarmCalls(request);
  for (const Counts& c : counts) {
    print("KVM warm call, no host call", c);
    EXPECT_EQ(c.kvm_runs, 1u);
    EXPECT_LE(c.syscalls, 5u);
  }
  EXPECT_LE(fewestSyscalls(counts), 4u);
}

TEST_F(KvmSandboxTest, EachHostCallAddsExactlyOneKvmRun) {
  CallRequest plain;
  plain.function = "heap_bytes";
  plain.startTimeout(kGenerousTimeout);
  const uint64_t baseline = fewestSyscalls(countWarmCalls(plain));
  CallRequest with_host_call;
  with_host_call.function = "call_host";
  with_host_call.args = {std::string("echo"), std::string("ping")};
  with_host_call.host_functions = &echo_;
  with_host_call.startTimeout(kGenerousTimeout);
  const auto counts = countWarmCalls(with_host_call);
  for (const Counts& c : counts) {
    print("KVM warm call, one host call", c);
    EXPECT_EQ(c.kvm_runs, 2u);
  }
  EXPECT_EQ(fewestSyscalls(counts), baseline + 1)
      << "a host call costs one KVM_RUN and nothing else";
}

}  // namespace
}  // namespace sandpool::vm
