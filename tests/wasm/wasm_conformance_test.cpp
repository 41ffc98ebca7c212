// The conformance suite's checks for Wasm guests, on each backend: a call
// leaves nothing for the next (state, a secret canary), every call gets
// fresh entropy, the WASI clocks read the host's, a runaway loop times out,
// traps are typed errors and the VM serves on. The guests are translated at build time (no tools
// needed here, so the KVM half runs inside QEMU too).
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <set>

#include "backend_test.h"
#include "vm/backend.h"
#include "vm/guest_image.h"
#include "vm/sandbox.h"
#include "vm/snapshot.h"
#include "vm/value_text.h"

namespace sandpool::vm {
namespace {

using namespace std::chrono_literals;
using sandpool::testing::backendName;
using sandpool::testing::BackendTest;
using sandpool::testing::kGenerousDeadline;

std::vector<uint8_t> readGuest(const std::string& name) {
  const std::string path = std::string(SANDPOOL_WASM_GUEST_DIR) + "/" + name + ".elf";
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "missing " << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// `text` with every byte one more: the form isolation.c's counts take, so
// that no call writes the text itself.
std::string shifted(const std::string& text) {
  std::string out = text;
  for (char& c : out) c = static_cast<char>(c + 1);
  return out;
}

class WasmConformanceTest : public BackendTest {
 protected:
  std::unique_ptr<Sandbox> vm(const std::string& guest) {
    VmConfig config;
    config.boot_timeout = kGenerousDeadline;
    auto image = GuestImage::parse(readGuest(guest), config);
    EXPECT_TRUE(image.ok()) << image.error().describe();
    if (!image) return nullptr;
    auto snapshot = Snapshot::boot(*backend_, *image, config);
    EXPECT_TRUE(snapshot.ok()) << snapshot.error().describe();
    if (!snapshot) return nullptr;
    auto sandbox = Sandbox::create(*backend_, *snapshot);
    EXPECT_TRUE(sandbox.ok()) << sandbox.error().describe();
    return sandbox ? std::move(sandbox.value()) : nullptr;
  }

  static void expectTrap(Sandbox& sandbox, const std::string& function, const std::string& trap,
                         std::vector<Value> args = {}) {
    CallResult result = call(sandbox, function, std::move(args));
    ASSERT_FALSE(result.result.ok()) << function;
    EXPECT_EQ(result.result.error().kind, ErrorKind::kGuestAbort);
    EXPECT_NE(result.result.error().message.find("wasm trap: " + trap), std::string::npos)
        << result.result.error().message;
  }
};

TEST_P(WasmConformanceTest, StateSetByACallIsInvisibleToTheNext) {
  auto guest = vm("isolation");
  ASSERT_TRUE(guest);
  ok(call(*guest, "remember", {std::string("kept by call one")}));
  EXPECT_EQ(ok(call(*guest, "recall")), Value(std::string("")));
}

TEST_P(WasmConformanceTest, SecretCanaryIsNowhereInLinearMemoryAfterItsCall) {
  auto guest = vm("isolation");
  ASSERT_TRUE(guest);
  const std::string canary = "tenant-A-canary-7f3a9c21e5";
  // The count finds a copy the call itself planted: it can see one.
  EXPECT_EQ(ok(call(*guest, "plant_and_count", {shifted(canary)})), Value(int32_t{1}));
  // The canary arrives as an argument (a copy from sandpool_alloc) and is
  // kept in a static buffer and on the heap; the next call finds none.
  ok(call(*guest, "remember", {canary}));
  EXPECT_EQ(ok(call(*guest, "count_unshifted", {shifted(canary)})), Value(int32_t{0}));
}

TEST_P(WasmConformanceTest, RandomGetIsFreshInEveryCall) {
  auto guest = vm("isolation");
  ASSERT_TRUE(guest);
  std::set<std::string> seen;
  for (int i = 0; i < 20; i++) seen.insert(formatValue(ok(call(*guest, "random"))));
  EXPECT_EQ(seen.size(), 20u);
}

TEST_P(WasmConformanceTest, RealtimeClockIsTheHostsAtTheTimeOfTheCall) {
  auto guest = vm("isolation");
  ASSERT_TRUE(guest);
  const auto nanosecondsNow = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const int64_t before = nanosecondsNow();
  const Value read = ok(call(*guest, "read_clock", {int32_t{0}}));
  const int64_t after = nanosecondsNow();
  ASSERT_EQ(typeOf(read), ValueType::kI64);
  EXPECT_GE(std::get<int64_t>(read), before);
  EXPECT_LE(std::get<int64_t>(read), after);
}

TEST_P(WasmConformanceTest, MonotonicClockAdvancesWithinACallAndNeverGoesBack) {
  auto guest = vm("isolation");
  ASSERT_TRUE(guest);
  const Value first = ok(call(*guest, "read_clock", {int32_t{1}}));
  const Value advance = ok(call(*guest, "monotonic_advance", {int32_t{1000}}));
  ASSERT_EQ(typeOf(advance), ValueType::kI64);
  EXPECT_GT(std::get<int64_t>(advance), 0) << "-1: it went back";
  const Value later = ok(call(*guest, "read_clock", {int32_t{1}}));
  EXPECT_GT(std::get<int64_t>(later), std::get<int64_t>(first));
}

TEST_P(WasmConformanceTest, CpuTimeClocksAreNotSupportedAndUnknownClocksInvalid) {
  auto guest = vm("isolation");
  ASSERT_TRUE(guest);
  EXPECT_EQ(ok(call(*guest, "read_clock", {int32_t{2}})), Value(int64_t{-58}));  // ENOTSUP
  EXPECT_EQ(ok(call(*guest, "read_clock", {int32_t{3}})), Value(int64_t{-58}));
  EXPECT_EQ(ok(call(*guest, "read_clock", {int32_t{9}})), Value(int64_t{-28}));  // EINVAL
}

TEST_P(WasmConformanceTest, RunawayLoopTimesOutAndTheVmServesOn) {
  auto guest = vm("isolation");
  ASSERT_TRUE(guest);
  CallResult spun = call(*guest, "spin", {}, 200ms);
  ASSERT_FALSE(spun.result.ok());
  EXPECT_EQ(spun.result.error().kind, ErrorKind::kTimeout);
  EXPECT_EQ(ok(call(*guest, "recall")), Value(std::string("")));
}

TEST_P(WasmConformanceTest, EachTrapIsATypedErrorAndTheVmServesOn) {
  auto guest = vm("traps");
  ASSERT_TRUE(guest);
  expectTrap(*guest, "unreachable", "unreachable executed");
  expectTrap(*guest, "out_of_bounds", "out of bounds");
  expectTrap(*guest, "divide_by_zero", "integer divide by zero", {int32_t{0}});
  expectTrap(*guest, "overflow", "integer overflow");
  expectTrap(*guest, "stack_exhaustion", "call stack exhausted");
  expectTrap(*guest, "indirect_mismatch", "indirect call type mismatch");
  EXPECT_EQ(ok(call(*guest, "divide_by_zero", {int32_t{1}})), Value(int32_t{1}));
}

INSTANTIATE_TEST_SUITE_P(Backends, WasmConformanceTest,
                         ::testing::Values(BackendKind::kEmulated, BackendKind::kKvm), backendName);

}  // namespace
}  // namespace sandpool::vm
