// The backend conformance suite: every guest behaviour the ABI defines, run
// against each backend. A backend the host cannot open is skipped with the
// reason (the KVM run inside QEMU covers kvm where the host has no /dev/kvm).
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <sandpool/abi.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <thread>

#include "backend_test.h"
#include "guest_files.h"
#include "holding_host_functions.h"
#include "vm/backend.h"
#include "vm/guest_image.h"
#include "vm/guest_memory.h"
#include "vm/mapping.h"
#include "vm/sandbox.h"
#include "vm/snapshot.h"
#include "vm/syscall_filter.h"
#include "vm/value_text.h"
#include "vm/x86.h"

namespace sandpool::vm {
namespace {

using namespace std::chrono_literals;
using sandpool::testing::backendName;
using sandpool::testing::BackendTest;
using sandpool::testing::HoldingHostFunctions;
using sandpool::testing::kGenerousDeadline;
using sandpool::testing::readGuest;

VmConfig generous() {
  VmConfig config;
  config.boot_timeout = kGenerousDeadline;
  return config;
}

class ConformanceTest : public BackendTest {
 protected:
  std::shared_ptr<const Snapshot> boot(const std::string& guest, VmConfig config = generous()) {
    return bootOn(*backend_, guest, config);
  }

  static std::shared_ptr<const Snapshot> bootOn(Backend& backend, const std::string& guest,
                                                VmConfig config = generous()) {
    auto image = GuestImage::parse(readGuest(guest), config);
    EXPECT_TRUE(image.ok()) << image.error().describe();
    if (!image) return nullptr;
    auto snapshot = Snapshot::boot(backend, *image, config);
    EXPECT_TRUE(snapshot.ok()) << snapshot.error().describe();
    return snapshot ? snapshot.value() : nullptr;
  }

  std::unique_ptr<Sandbox> vm(const std::string& guest, VmConfig config = generous()) {
    return vmOn(*backend_, guest, config);
  }

  static std::unique_ptr<Sandbox> vmOn(Backend& backend, const std::string& guest,
                                       VmConfig config = generous()) {
    auto snapshot = bootOn(backend, guest, config);
    if (!snapshot) return nullptr;
    auto sandbox = Sandbox::create(backend, snapshot);
    EXPECT_TRUE(sandbox.ok()) << sandbox.error().describe();
    return sandbox ? std::move(sandbox.value()) : nullptr;
  }
};

TEST_P(ConformanceTest, ExportsCarryTheirTypes) {
  auto snapshot = boot("add");
  ASSERT_TRUE(snapshot);
  std::map<std::string, std::string> found;
  for (const auto& sig : snapshot->exports()) found[sig.name] = sig.describe();
  EXPECT_EQ(found["add"], "add(i32, i32) -> i32");
  EXPECT_EQ(found["add_f64"], "add_f64(f64, f64) -> f64");
  EXPECT_EQ(found["both"], "both(bool, bool) -> bool");
  EXPECT_EQ(found.size(), 7u);
}

TEST_P(ConformanceTest, HelloPrintsThroughTheHostAndReturnsAGreeting) {
  auto hello = vm("hello");
  ASSERT_TRUE(hello);
  CallResult result = call(*hello, "hello", {std::string("sandpool")});
  EXPECT_EQ(ok(result), Value(std::string("Hello, sandpool!")));
  EXPECT_EQ(result.output, "hello from the guest, sandpool!\n");
  EXPECT_EQ(result.stats.host_calls, 1u);
}

TEST_P(ConformanceTest, EchoReturnsStringsAndBytesUnchanged) {
  auto echo = vm("echo");
  ASSERT_TRUE(echo);
  EXPECT_EQ(ok(call(*echo, "echo", {std::string("")})), Value(std::string("")));
  std::string big(300 * 1024, 'x');
  for (size_t i = 0; i < big.size(); i++) big[i] = static_cast<char>('a' + i % 26);
  EXPECT_EQ(ok(call(*echo, "echo", {big})), Value(big));
  Bytes bytes = {0, 1, 2, 255, 0, 7};
  EXPECT_EQ(ok(call(*echo, "echo_bytes", {bytes})), Value(bytes));
  EXPECT_EQ(ok(call(*echo, "nothing")), Value(Void{}));
}

TEST_P(ConformanceTest, AddCoversEveryScalarType) {
  auto add = vm("add");
  ASSERT_TRUE(add);
  EXPECT_EQ(ok(call(*add, "add", {int32_t{-5}, int32_t{3}})), Value(int32_t{-2}));
  EXPECT_EQ(ok(call(*add, "add_i64", {int64_t{1} << 40, int64_t{-1}})),
            Value((int64_t{1} << 40) - 1));
  EXPECT_EQ(ok(call(*add, "add_u32", {uint32_t{0xffffffff}, uint32_t{2}})), Value(uint32_t{1}));
  EXPECT_EQ(ok(call(*add, "add_u64", {uint64_t{1} << 63, uint64_t{5}})),
            Value((uint64_t{1} << 63) + 5));
  EXPECT_EQ(ok(call(*add, "add_f32", {1.5f, 2.25f})), Value(3.75f));
  EXPECT_EQ(ok(call(*add, "add_f64", {0.1, 0.2})), Value(0.1 + 0.2));
  EXPECT_EQ(ok(call(*add, "both", {true, true})), Value(true));
  EXPECT_EQ(ok(call(*add, "both", {true, false})), Value(false));
}

TEST_P(ConformanceTest, Sha256MatchesKnownDigests) {
  auto sha = vm("sha256");
  ASSERT_TRUE(sha);
  EXPECT_EQ(ok(call(*sha, "sha256_hex", {std::string("abc")})),
            Value(std::string("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")));
  EXPECT_EQ(ok(call(*sha, "sha256_hex", {std::string("")})),
            Value(std::string("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")));
  // 448-bit message: padding spills into a second block.
  EXPECT_EQ(ok(call(*sha, "sha256_hex",
                    {std::string("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")})),
            Value(std::string("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")));
  Value digest = ok(call(*sha, "sha256", {Bytes(1000000, 'a')}));
  ASSERT_EQ(typeOf(digest), ValueType::kBytes);
  EXPECT_EQ(formatValue(digest),
            "0xcdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_P(ConformanceTest, CounterReadsItsSnapshotValueOnEveryCall) {
  auto counter = vm("counter");
  ASSERT_TRUE(counter);
  for (int i = 0; i < 50; i++)
    ASSERT_EQ(ok(call(*counter, "increment")), Value(uint64_t{1})) << "call " << i;
}

TEST_P(ConformanceTest, SecretWrittenInOneCallIsInvisibleToTheNext) {
  auto counter = vm("counter");
  ASSERT_TRUE(counter);
  ok(call(*counter, "remember", {std::string("tenant A's secret")}));
  EXPECT_EQ(ok(call(*counter, "recall")), Value(std::string("")));
  // The argument bytes of the earlier call are gone from the input buffer too.
  ok(call(*counter, "remember",
          {std::string("a much longer secret that fills the buffer further")}));
  ok(call(*counter, "remember", {std::string("x")}));
  EXPECT_EQ(ok(call(*counter, "recall")), Value(std::string("")));
}

TEST_P(ConformanceTest, RegistersAndSseStateDoNotLeakBetweenCalls) {
  auto probe = vm("probe");
  ASSERT_TRUE(probe);
  const Value clean_mxcsr = ok(call(*probe, "get_mxcsr"));
  ok(call(*probe, "set_xmm15", {3.5}));
  EXPECT_EQ(ok(call(*probe, "get_xmm15")), Value(0.0));
  ok(call(*probe, "set_mxcsr_round_up"));
  EXPECT_EQ(ok(call(*probe, "get_mxcsr")), clean_mxcsr);
}

TEST_P(ConformanceTest, EveryCallGetsFreshEntropy) {
  auto probe = vm("probe");
  ASSERT_TRUE(probe);
  std::set<std::string> seen;
  for (int i = 0; i < 20; i++) seen.insert(formatValue(ok(call(*probe, "entropy"))));
  EXPECT_EQ(seen.size(), 20u);
}

TEST_P(ConformanceTest, UnknownFunctionIsATypedError) {
  auto add = vm("add");
  ASSERT_TRUE(add);
  CallResult result = call(*add, "subtract", {int32_t{1}});
  ASSERT_FALSE(result.result.ok());
  EXPECT_EQ(result.result.error().kind, ErrorKind::kUnknownFunction);
  EXPECT_NE(result.result.error().message.find("'subtract'"), std::string::npos);
}

TEST_P(ConformanceTest, WrongArgumentsAreRefusedBeforeTheGuestRuns) {
  auto add = vm("add");
  ASSERT_TRUE(add);
  CallResult count = call(*add, "add", {int32_t{1}});
  ASSERT_FALSE(count.result.ok());
  EXPECT_EQ(count.result.error().kind, ErrorKind::kBadArguments);
  CallResult types = call(*add, "add", {int32_t{1}, std::string("2")});
  ASSERT_FALSE(types.result.ok());
  EXPECT_EQ(types.result.error().kind, ErrorKind::kBadArguments);
  EXPECT_NE(types.result.error().message.find("add(i32, i32) -> i32"), std::string::npos);
  EXPECT_NE(types.result.error().message.find("(i32, string)"), std::string::npos);
}

TEST_P(ConformanceTest, ArgumentsLargerThanTheInputBufferAreRefused) {
  VmConfig config = generous();
  config.input_size = 64 * 1024;
  auto echo = vm("echo", config);
  ASSERT_TRUE(echo);
  CallResult result = call(*echo, "echo", {std::string(100 * 1024, 'x')});
  ASSERT_FALSE(result.result.ok());
  EXPECT_EQ(result.result.error().kind, ErrorKind::kLimitExceeded);
  EXPECT_EQ(ok(call(*echo, "echo", {std::string("still fine")})), Value(std::string("still fine")));
}

TEST_P(ConformanceTest, ManyVmsShareOneSnapshot) {
  auto snapshot = boot("counter");
  ASSERT_TRUE(snapshot);
  std::vector<std::unique_ptr<Sandbox>> vms;
  for (int i = 0; i < 8; i++) {
    auto sandbox = Sandbox::create(*backend_, snapshot);
    ASSERT_TRUE(sandbox.ok()) << sandbox.error().describe();
    vms.push_back(std::move(sandbox.value()));
  }
  for (auto& sandbox : vms) {
    ok(call(*sandbox, "remember", {std::string("mine")}));
    EXPECT_EQ(ok(call(*sandbox, "increment")), Value(uint64_t{1}));
  }
}

TEST_P(ConformanceTest, ResetAfterManyDirtyPagesRestoresEveryPage) {
  auto counter = vm("counter");
  ASSERT_TRUE(counter);
  for (uint32_t pages : {1u, 16u, 300u, 2u}) {
    CallResult touched = call(*counter, "touch_pages", {pages});
    ok(touched);
    EXPECT_GE(touched.stats.pages_restored, pages);
    EXPECT_EQ(ok(call(*counter, "increment")), Value(uint64_t{1}));
    EXPECT_EQ(ok(call(*counter, "recall")), Value(std::string("")));
  }
}

// Write-protected guest pages made writable one by one split the guest
// mapping; with the process at vm.max_map_count the split fails. The call
// must not take the process down: the VM is marked unusable, and a new one
// works once mappings are free again.
// Only the emulated backend tracks writes with page protections.
TEST(EmulatedWriteTracker, AWriteAtTheMappingLimitDropsTheVmNotTheProcess) {
  auto backend = makeEmulatedBackend();
  ASSERT_TRUE(backend);
  auto image = GuestImage::parse(readGuest("counter"), generous());
  ASSERT_TRUE(image) << image.error().describe();
  auto booted = Snapshot::boot(*backend, *image, generous());
  ASSERT_TRUE(booted) << booted.error().describe();
  std::shared_ptr<const Snapshot> snapshot = *booted;
  auto sandbox = Sandbox::create(*backend, snapshot);
  ASSERT_TRUE(sandbox.ok()) << sandbox.error().describe();

  // No call yet, so no page is writable: the first write of the call below
  // (its request, its stack) splits the guest mapping. Every other page of a reserve made read-only until the kernel refuses a
  // new mapping.
  constexpr size_t kReservePages = 1 << 17;
  auto mapped = Mapping::map(kReservePages * 4096, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, "mapping filler");
  ASSERT_TRUE(mapped) << mapped.error().describe();
  std::optional<Mapping> reserve(std::move(*mapped));
  bool limit_reached = false;
  for (size_t page = 0; page < kReservePages; page += 2) {
    if (::mprotect(reserve->data() + page * 4096, 4096, PROT_READ) != 0) {
      ASSERT_EQ(errno, ENOMEM);
      limit_reached = true;
      break;
    }
  }
  ASSERT_TRUE(limit_reached) << "vm.max_map_count is above " << kReservePages << " mappings";

  CallResult at_limit = sandpool::testing::callGuest(**sandbox, "touch_pages", {uint32_t{16}});
  const bool vm_usable = (*sandbox)->healthy();
  reserve.reset();

  EXPECT_FALSE(vm_usable);
  if (!at_limit.result) {
    EXPECT_NE(at_limit.result.error().kind, ErrorKind::kInternal);
  }
  auto fresh = Sandbox::create(*backend, snapshot);
  ASSERT_TRUE(fresh.ok()) << fresh.error().describe();
  CallResult after = sandpool::testing::callGuest(**fresh, "increment");
  ASSERT_TRUE(after.result) << after.result.error().describe();
  EXPECT_EQ(after.result.value(), Value(uint64_t{1}));
}

TEST_P(ConformanceTest, InitialisationThatNeverFinishesIsRefusedAtTheBootTimeout) {
  VmConfig config;
  config.boot_timeout = std::chrono::milliseconds(200);
  auto image = GuestImage::parse(readGuest("bad_init"), config);
  ASSERT_TRUE(image.ok()) << image.error().describe();
  auto snapshot = Snapshot::boot(*backend_, *image, config);
  ASSERT_FALSE(snapshot.ok());
  EXPECT_EQ(snapshot.error().kind, ErrorKind::kInvalidGuest);
  EXPECT_NE(snapshot.error().message.find("exceeded its 200 ms timeout"), std::string::npos)
      << snapshot.error().message;
}

TEST_P(ConformanceTest, InitialisationThatAbortsIsRefusedWithTheGuestsMessage) {
  auto image = GuestImage::parse(readGuest("abort_init"), generous());
  ASSERT_TRUE(image.ok()) << image.error().describe();
  auto snapshot = Snapshot::boot(*backend_, *image, generous());
  ASSERT_FALSE(snapshot.ok());
  EXPECT_EQ(snapshot.error().kind, ErrorKind::kInvalidGuest);
  EXPECT_NE(snapshot.error().message.find("missing configuration"), std::string::npos)
      << snapshot.error().message;
}

class RecordingHostFunctions : public HostFunctions {
 public:
  Expected<Value> callHostFunction(std::string_view name, std::span<const Value> args) override {
    calls.push_back(std::string(name));
    if (name == "kv_get" && args.size() == 1 && typeOf(args[0]) == ValueType::kString) {
      return Value("value-of-" + std::get<std::string>(args[0]));
    }
    return makeError(ErrorKind::kBadHostCall, "no host function '" + std::string(name) + "' here");
  }
  std::vector<std::string> calls;
};

TEST_P(ConformanceTest, HostFunctionsAnswerGuestsAndTheirErrorsReachTheGuest) {
  auto probe = vm("probe");
  ASSERT_TRUE(probe);
  RecordingHostFunctions host;
  EXPECT_EQ(ok(call(*probe, "call_host", {std::string("kv_get"), std::string("k1")},
                    kGenerousDeadline, &host)),
            Value(std::string("value-of-k1")));
  CallResult refused = call(*probe, "call_host", {std::string("kv_put"), std::string("k1")},
                            kGenerousDeadline, &host);
  ASSERT_FALSE(refused.result.ok());
  EXPECT_EQ(refused.result.error().kind, ErrorKind::kGuestAbort);
  EXPECT_NE(refused.result.error().message.find("no host function 'kv_put' here"),
            std::string::npos);
  EXPECT_EQ(host.calls, (std::vector<std::string>{"kv_get", "kv_put"}));
}

class ExpiringHostFunctions : public HostFunctions {
 public:
  Expected<Value> callHostFunction(std::string_view, std::span<const Value>) override {
    return makeError(ErrorKind::kTimeout, "host function gave no reply before the call's deadline");
  }
};

TEST_P(ConformanceTest, HostFunctionThatOutlivesTheDeadlineEndsTheCallAsATimeout) {
  auto probe = vm("probe");
  ASSERT_TRUE(probe);
  ExpiringHostFunctions host;
  CallResult result = call(*probe, "call_host", {std::string("kv_get"), std::string("k")},
                           kGenerousDeadline, &host);
  ASSERT_FALSE(result.result.ok());
  EXPECT_EQ(result.result.error().kind, ErrorKind::kTimeout) << result.result.error().describe();
  EXPECT_NE(result.result.error().message.find("gave no reply"), std::string::npos);
  EXPECT_TRUE(probe->healthy());
  EXPECT_EQ(typeOf(ok(call(*probe, "heap_bytes"))), ValueType::kU64) << "the VM serves on";
}

// The watchdog sleeps until the earliest deadline it knows; a call with a
// sooner one must wake it and be stopped at its own.
TEST_P(ConformanceTest, ShortDeadlineIsKeptWhileALongerCallRuns) {
  auto probe = vm("probe");
  auto spinner = vm("misbehave");
  ASSERT_TRUE(probe && spinner);
  HoldingHostFunctions host;
  std::optional<CallResult> held;
  std::thread long_call([&] {
    held = call(*probe, "call_host", {std::string("hold"), std::string("")}, 600s, &host);
  });
  host.waitUntilEntered();
  const auto start = std::chrono::steady_clock::now();
  CallResult stopped = call(*spinner, "spin", {}, 50ms);
  const auto took = std::chrono::steady_clock::now() - start;
  host.release();
  long_call.join();
  ASSERT_FALSE(stopped.result.ok());
  EXPECT_EQ(stopped.result.error().kind, ErrorKind::kTimeout) << stopped.result.error().describe();
  // A watchdog that slept on towards the held call's deadline (600 s) would
  // stop the spinner only then; 30 s is far beyond the 50 ms deadline plus any
  // plausible delay of a loaded machine, and far below 600 s.
  EXPECT_LT(took, 30s) << "the watchdog slept past the spinning call's deadline";
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(ok(*held), Value(std::string("released")));
}

// Each backend owns its watchdog: a server (or test fixture) whose running
// calls hold every slot of its watchdog refuses further calls with a typed
// error, while another backend in the same process serves on.
TEST_P(ConformanceTest, EachBackendsWatchdogHasSlotsOfItsOwn) {
  auto greeter = vm("hello");
  ASSERT_TRUE(greeter);
  auto other_backend = openBackendOfThisKind();
  ASSERT_TRUE(other_backend.ok()) << other_backend.error().describe();
  auto other_greeter = vmOn(**other_backend, "hello");
  ASSERT_TRUE(other_greeter);
  ASSERT_NE(&backend_->watchdog(), &other_backend.value()->watchdog());

  // A vCPU of this backend for the guards to watch; their deadlines never pass.
  auto snapshot = boot("hello");
  ASSERT_TRUE(snapshot);
  auto memory = GuestMemory::mapPrivate(snapshot->memfd(), snapshot->config().memory_size,
                                        PROT_READ | PROT_WRITE);
  ASSERT_TRUE(memory.ok()) << memory.error().describe();
  auto vcpu = backend_->createMicroVm(*memory, snapshot->layout(), snapshot->entry());
  ASSERT_TRUE(vcpu.ok()) << vcpu.error().describe();
  const auto never = std::chrono::steady_clock::now() + 600s;
  std::vector<Watchdog::Guard> held;
  held.reserve(Watchdog::kSlots);
  for (size_t i = 0; i < Watchdog::kSlots; ++i) {
    auto guard = backend_->watchdog().watch(**vcpu, never);
    ASSERT_TRUE(guard.ok()) << "slot " << i << ": " << guard.error().describe();
    held.push_back(std::move(*guard));
  }
  auto refused = backend_->watchdog().watch(**vcpu, never);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind, ErrorKind::kLimitExceeded) << refused.error().describe();

  CallResult full = call(*greeter, "hello", {std::string("full")});
  ASSERT_FALSE(full.result.ok());
  EXPECT_EQ(full.result.error().kind, ErrorKind::kLimitExceeded) << full.result.error().describe();
  EXPECT_TRUE(greeter->healthy());
  EXPECT_EQ(ok(call(*other_greeter, "hello", {std::string("other")})),
            Value(std::string("Hello, other!")));

  held.clear();
  EXPECT_EQ(ok(call(*greeter, "hello", {std::string("again")})),
            Value(std::string("Hello, again!")));
}

constexpr std::chrono::milliseconds kMisbehaviourDeadline{120'000};

// One misbehaviour: what the guest does and the typed error it must yield.
struct Misbehaviour {
  const char* function;
  std::vector<Value> args;
  ErrorKind kind;
  const char* message_part;
  int fault_vector = -1;
  std::optional<uint64_t> fault_page;  // page of the faulting address
  // Only `spin` is about its deadline; the rest must end long before theirs
  // (1 000 host calls under KVM inside QEMU on a busy machine take seconds).
  std::chrono::milliseconds deadline = kMisbehaviourDeadline;
};

class MisbehaviourTest : public ConformanceTest {
 protected:
  // The two halves of Cr0AndCr3Writes..., one per backend.
  void expectCrWritesLastOneCall();
  void expectCrWritesFailNamingTheInstruction();
};

TEST_P(MisbehaviourTest, EachYieldsItsTypedErrorAndTheVmServesOn) {
  VmConfig config = generous();
  config.max_host_calls = 1000;
  auto snapshot = boot("misbehave", config);
  ASSERT_TRUE(snapshot);
  auto sandbox = Sandbox::create(*backend_, snapshot);
  ASSERT_TRUE(sandbox.ok()) << sandbox.error().describe();
  Sandbox& vm = **sandbox;
  const MemoryLayout& layout = snapshot->layout();

  const std::vector<Misbehaviour> cases = {
      {"spin", {}, ErrorKind::kTimeout, "timeout", -1, std::nullopt, 200ms},
      {"read_null", {}, ErrorKind::kGuestFault, "0x0", 14, 0},
      {"write_null", {}, ErrorKind::kGuestFault, "0x0", 14, 0},
      {"stack_overflow", {}, ErrorKind::kGuestFault, "page fault", 14, layout.guard_addr},
      {"write_code", {}, ErrorKind::kGuestFault, "page fault", 14},
      {"alloc_past_heap", {}, ErrorKind::kOutOfMemory, "heap exhausted"},
      {"write_past_heap", {}, ErrorKind::kGuestFault, "page fault", 14, layout.heap_end},
      {"bad_host_call", {}, ErrorKind::kBadHostCall, "out of bounds"},
      {"unknown_port", {}, ErrorKind::kGuestFault, "unknown I/O port 0x1234"},
      {"explicit_abort", {}, ErrorKind::kGuestAbort, "the guest gave up"},
      {"divide", {int32_t{1}, int32_t{0}}, ErrorKind::kGuestFault, "divide error", 0},
      {"halt", {}, ErrorKind::kGuestFault, ""},
      {"fail_with", {std::string("no")}, ErrorKind::kGuestAbort, "refused: no"},
      {"huge_result", {}, ErrorKind::kLimitExceeded, "does not fit the output buffer"},
      {"host_call_storm", {}, ErrorKind::kLimitExceeded, "more than 1000 host calls"},
  };
  for (const Misbehaviour& m : cases) {
    SCOPED_TRACE(m.function);
    CallResult result = call(vm, m.function, m.args, m.deadline);
    ASSERT_FALSE(result.result.ok()) << m.function << " succeeded";
    const Error& error = result.result.error();
    EXPECT_EQ(error.kind, m.kind) << error.describe();
    EXPECT_NE(error.message.find(m.message_part), std::string::npos) << error.describe();
    if (m.fault_vector >= 0) {
      ASSERT_TRUE(error.fault.has_value()) << error.describe();
      EXPECT_EQ(error.fault->vector, static_cast<uint32_t>(m.fault_vector)) << error.describe();
    }
    if (m.fault_page) {
      ASSERT_TRUE(error.fault.has_value()) << error.describe();
      EXPECT_EQ(error.fault->address & ~(kPageSize - 1), *m.fault_page) << error.describe();
    }
    ASSERT_TRUE(vm.healthy());
    EXPECT_EQ(ok(call(vm, "divide", {int32_t{6}, int32_t{3}})), Value(int32_t{2}))
        << "after " << m.function;
  }
}

TEST_P(MisbehaviourTest, PrintOutputIsBoundedPerCall) {
  VmConfig config = generous();
  config.max_output_bytes = 4096;
  auto vm = this->vm("misbehave", config);
  ASSERT_TRUE(vm);
  CallResult flood = call(*vm, "print_flood", {uint32_t{1000}});
  ok(flood);
  EXPECT_EQ(flood.output.size(), 4096u);
  EXPECT_TRUE(flood.output_truncated);
  CallResult quiet = call(*vm, "print_flood", {uint32_t{1}});
  EXPECT_EQ(quiet.output, "line 0 of a long flood of output\n");
  EXPECT_FALSE(quiet.output_truncated);
}

TEST_P(MisbehaviourTest, MissingHostFunctionIsAnErrorTheGuestSees) {
  auto vm = this->vm("misbehave");
  ASSERT_TRUE(vm);
  EXPECT_EQ(ok(call(*vm, "call_missing_host_function")),
            Value(std::string("unknown host function 'no_such_function'")));
}

// Guest memory the host reads for the guest, and privileged instructions:
// the same behaviour on both backends, or a typed fault naming what differs.
// None of these cases is about time: they take the generous default deadline.

TEST_P(MisbehaviourTest, AbortMessageOutsideGuestReadableMemoryIsAGuestFaultNamingTheAddress) {
  auto snapshot = boot("misbehave");
  ASSERT_TRUE(snapshot);
  auto sandbox = Sandbox::create(*backend_, snapshot);
  ASSERT_TRUE(sandbox.ok()) << sandbox.error().describe();
  Sandbox& vm = **sandbox;
  const MemoryLayout& layout = snapshot->layout();
  struct Case {
    uint64_t address, size;
    uint64_t refused;   // the first address the host must not read
    const char* where;  // what lies there
  };
  const Case cases[] = {
      {SANDPOOL_HOST_AREA_START, 64, SANDPOOL_HOST_AREA_START, "the host area"},
      {SANDPOOL_HOST_AREA_END - 8, 8, SANDPOOL_HOST_AREA_END - 8, "the host area"},
      {0, 16, 0, "page 0"},
      {SANDPOOL_BOOT_INFO_ADDR + kPageSize - 8, 16, SANDPOOL_HOST_AREA_START, "the host area"},
      {SANDPOOL_HOST_AREA_END, 8, SANDPOOL_HOST_AREA_END, "an unmapped gap"},
      {layout.heap_end - 8, 64, layout.guard_addr, "the guard page"},
      {layout.memory_size - 8, 64, layout.memory_size, "past guest memory"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(toHex(c.address));
    CallResult result = call(vm, "abort_with_message_at", {c.address, c.size});
    ASSERT_FALSE(result.result.ok());
    const Error& error = result.result.error();
    EXPECT_EQ(error.kind, ErrorKind::kGuestFault) << error.describe();
    EXPECT_NE(error.message.find("unreadable message"), std::string::npos) << error.describe();
    EXPECT_NE(
        error.message.find(toHex(c.refused) + " (" + c.where + ") is not readable by the guest"),
        std::string::npos)
        << error.describe();
    ASSERT_TRUE(vm.healthy());
    EXPECT_EQ(ok(call(vm, "divide", {int32_t{6}, int32_t{3}})), Value(int32_t{2}));
  }
  CallResult wrapping = call(vm, "abort_with_message_at", {~uint64_t{0} - 8, uint64_t{64}});
  ASSERT_FALSE(wrapping.result.ok());
  EXPECT_EQ(wrapping.result.error().kind, ErrorKind::kGuestFault);
  EXPECT_NE(wrapping.result.error().message.find("wraps around the address space"),
            std::string::npos)
      << wrapping.result.error().describe();
}

TEST_P(MisbehaviourTest, AbortMessageIsReadFromEveryGuestReadableRegionAndAcrossAdjacentOnes) {
  auto snapshot = boot("misbehave");
  ASSERT_TRUE(snapshot);
  auto sandbox = Sandbox::create(*backend_, snapshot);
  ASSERT_TRUE(sandbox.ok()) << sandbox.error().describe();
  const MemoryLayout& layout = snapshot->layout();
  // The boot info starts with its magic; the others hold what they hold.
  const uint64_t readable[] = {SANDPOOL_BOOT_INFO_ADDR, SANDPOOL_IMAGE_BASE, layout.output_addr - 4,
                               layout.heap_start, layout.stack_top - 16};
  for (uint64_t address : readable) {
    SCOPED_TRACE(toHex(address));
    CallResult result = call(**sandbox, "abort_with_message_at", {address, uint64_t{16}});
    ASSERT_FALSE(result.result.ok());
    EXPECT_EQ(result.result.error().kind, ErrorKind::kGuestAbort)
        << result.result.error().describe();
  }
  CallResult boot_info =
      call(**sandbox, "abort_with_message_at", {uint64_t{SANDPOOL_BOOT_INFO_ADDR}, uint64_t{4}});
  ASSERT_FALSE(boot_info.result.ok());
  const uint32_t magic = SANDPOOL_BOOT_MAGIC;
  EXPECT_EQ(boot_info.result.error().message,
            "guest aborted: " + std::string(reinterpret_cast<const char*>(&magic), sizeof magic));
}

// What a privileged instruction must yield: #GP(0) at the instruction, as
// KVM's MSR filter and the architecture raise it.
void expectGeneralProtectionFault(const CallResult& result, uint64_t rip) {
  ASSERT_FALSE(result.result.ok());
  const Error& error = result.result.error();
  EXPECT_EQ(error.kind, ErrorKind::kGuestFault) << error.describe();
  EXPECT_NE(error.message.find("general protection fault (vector 13)"), std::string::npos)
      << error.describe();
  ASSERT_TRUE(error.fault.has_value()) << error.describe();
  EXPECT_EQ(error.fault->vector, x86::kVectorGeneralProtection);
  EXPECT_EQ(error.fault->error_code, 0u);
  EXPECT_EQ(error.fault->rip, rip) << error.describe();
}

uint64_t siteOf(Sandbox& vm, const char* name) {
  CallRequest request;
  request.function = "site_of";
  request.args = {std::string(name)};
  request.startTimeout(kGenerousDeadline);
  CallResult site = vm.call(request);
  EXPECT_TRUE(site.result.ok()) << site.result.error().describe();
  return site.result ? std::get<uint64_t>(site.result.value()) : 0;
}

TEST_P(MisbehaviourTest, MsrAccessOtherThanTheSegmentBasesRaisesGeneralProtectionFault) {
  auto vm = this->vm("misbehave");
  ASSERT_TRUE(vm);
  const uint64_t wrmsr = siteOf(*vm, "wrmsr"), rdmsr = siteOf(*vm, "rdmsr");
  constexpr uint32_t kUnknownMsr = 0x1234;
  for (uint32_t msr : {kUnknownMsr, x86::kMsrEfer, x86::kMsrKernelGsBase}) {
    SCOPED_TRACE(toHex(msr));
    expectGeneralProtectionFault(call(*vm, "write_msr", {msr, uint64_t{1}}), wrmsr);
    expectGeneralProtectionFault(call(*vm, "read_msr", {msr}), rdmsr);
  }
  for (uint32_t msr : {x86::kMsrFsBase, x86::kMsrGsBase}) {
    SCOPED_TRACE(toHex(msr));
    ok(call(*vm, "write_msr", {msr, uint64_t{0x10000}}));
    EXPECT_EQ(ok(call(*vm, "read_msr", {msr})), Value(uint64_t{0})) << "the reset restored it";
  }
}

// The long-mode CR0 of docs/kvm.md with AM set as well.
constexpr uint64_t kLongModeCr0 = x86::kCr0LongMode | x86::kCr0Am;
static_assert(kLongModeCr0 == 0x80050033);
using x86::kCr0Pg;
using x86::kCr0Wp;

TEST_P(MisbehaviourTest, ClearingCr0PagingRaisesGeneralProtectionFault) {
  auto vm = this->vm("misbehave");
  ASSERT_TRUE(vm);
  expectGeneralProtectionFault(call(*vm, "write_cr0", {kLongModeCr0 & ~kCr0Pg}),
                               siteOf(*vm, "cr0"));
  EXPECT_EQ(ok(call(*vm, "divide", {int32_t{6}, int32_t{3}})), Value(int32_t{2}));
}

// KVM: the guest runs at ring 0 and may change CR0 and CR3 for the rest of
// its call; the reset puts them back.
void MisbehaviourTest::expectCrWritesLastOneCall() {
  auto vm = this->vm("misbehave");
  ASSERT_TRUE(vm);
  EXPECT_EQ(ok(call(*vm, "write_cr0_then_code", {kLongModeCr0 & ~kCr0Wp})), Value(int32_t{7}))
      << "without CR0.WP the guest patched its own code";
  CallResult protected_again = call(*vm, "write_code", {});
  ASSERT_FALSE(protected_again.result.ok()) << "the reset restored CR0.WP and the code page";
  ASSERT_TRUE(protected_again.result.error().fault.has_value());
  EXPECT_EQ(protected_again.result.error().fault->vector, x86::kVectorPageFault);
  ok(call(*vm, "write_cr0", {kLongModeCr0}));
  const Value cr3 = ok(call(*vm, "read_cr3", {}));
  ok(call(*vm, "write_cr3", {cr3}));
  CallResult no_tables = call(*vm, "write_cr3", {vm->snapshot().layout().heap_start});
  ASSERT_FALSE(no_tables.result.ok());
  EXPECT_EQ(no_tables.result.error().kind, ErrorKind::kGuestFault)
      << no_tables.result.error().describe();
  EXPECT_NE(no_tables.result.error().message.find("triple fault"), std::string::npos)
      << no_tables.result.error().describe();
  EXPECT_EQ(ok(call(*vm, "read_cr3", {})), cr3);
}

// Emulated: Unicorn runs the guest without paging, so it cannot do what such
// a write does on KVM; the call fails naming the instruction instead.
void MisbehaviourTest::expectCrWritesFailNamingTheInstruction() {
  auto vm = this->vm("misbehave");
  ASSERT_TRUE(vm);
  struct Case {
    const char* function;
    uint64_t value;
    const char* site;
    const char* names;
  };
  const Case cases[] = {
      {"write_cr0_then_code", kLongModeCr0 & ~kCr0Wp, "cr0", "mov to cr0 of 0x80040033"},
      {"write_cr0", kLongModeCr0, "cr0", "mov to cr0 of 0x80050033"},
      {"write_cr3", SANDPOOL_HOST_AREA_START, "cr3", "mov to cr3 of 0x2000"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.function);
    CallResult result = call(*vm, c.function, {c.value});
    ASSERT_FALSE(result.result.ok());
    const Error& error = result.result.error();
    EXPECT_EQ(error.kind, ErrorKind::kGuestFault) << error.describe();
    EXPECT_NE(error.message.find(c.names), std::string::npos) << error.describe();
    EXPECT_NE(error.message.find("does not emulate control-register writes"), std::string::npos)
        << error.describe();
    ASSERT_TRUE(error.fault.has_value());
    EXPECT_EQ(error.fault->rip, siteOf(*vm, c.site));
  }
  CallResult protected_still = call(*vm, "write_code", {});
  ASSERT_FALSE(protected_still.result.ok());
  EXPECT_EQ(protected_still.result.error().kind, ErrorKind::kGuestFault);
}

TEST_P(MisbehaviourTest, Cr0AndCr3WritesLastOneCallOnKvmAndFailNamingTheInstructionWhenEmulated) {
  if (GetParam() == BackendKind::kKvm) {
    expectCrWritesLastOneCall();
  } else {
    expectCrWritesFailNamingTheInstruction();
  }
}

TEST_P(MisbehaviourTest, JumpToNonCanonicalAddressRaisesGeneralProtectionFaultNamingIt) {
  auto vm = this->vm("misbehave");
  ASSERT_TRUE(vm);
  const uint64_t jump = siteOf(*vm, "jump");
  // The last target is the guest's own code with bit 63 set: an emulator
  // that truncated addresses would run it.
  const uint64_t targets[] = {uint64_t{1} << 63, uint64_t{1} << 47, jump | uint64_t{1} << 63};
  for (uint64_t target : targets) {
    SCOPED_TRACE(toHex(target));
    CallResult result = call(*vm, "jump_to", {target});
    ASSERT_FALSE(result.result.ok());
    const Error& error = result.result.error();
    EXPECT_EQ(error.kind, ErrorKind::kGuestFault) << error.describe();
    ASSERT_TRUE(error.fault.has_value()) << error.describe();
    EXPECT_EQ(error.fault->vector, x86::kVectorGeneralProtection) << error.describe();
    EXPECT_EQ(error.fault->error_code, 0u);
    // The rip of the #GP is the target under QEMU's CPU (KVM inside QEMU and
    // Unicorn both); a hardware CPU reports the jump itself.
    EXPECT_TRUE(error.fault->rip == target || error.fault->rip == jump) << error.describe();
  }
  const uint64_t unmapped = 0xdead0000;
  CallResult result = call(*vm, "jump_to", {unmapped});
  ASSERT_FALSE(result.result.ok());
  ASSERT_TRUE(result.result.error().fault.has_value());
  EXPECT_EQ(result.result.error().fault->vector, x86::kVectorPageFault)
      << "a canonical address is a page fault";
  EXPECT_EQ(result.result.error().fault->address, unmapped);
}

// The system-call filter of the threads that run guests
// (docs/security.md): a thread under it, in kill mode, creates VMs, runs
// calls that print, call the host, fault and time out (the watchdog
// interrupts it), and resets between them. A call the filter does not
// allow would have killed the test process.
TEST_P(ConformanceTest, GuestsRunOnAThreadUnderTheSystemCallFilter) {
  auto hello = boot("hello");
  auto misbehave = boot("misbehave");
  auto probe = boot("probe");
  ASSERT_TRUE(hello && misbehave && probe);
  std::thread worker([&] {
    auto restricted = restrictGuestThread(GetParam(), FilterMode::kKill);
    ASSERT_TRUE(restricted.ok()) << restricted.error().describe();
    auto greeter = Sandbox::create(*backend_, hello);
    auto spinner = Sandbox::create(*backend_, misbehave);
    auto prober = Sandbox::create(*backend_, probe);
    ASSERT_TRUE(greeter.ok() && spinner.ok() && prober.ok());
    for (int i = 0; i < 3; ++i) {
      CallResult greeting = call(**greeter, "hello", {std::string("filter")});
      EXPECT_EQ(ok(greeting), Value(std::string("Hello, filter!")));
      EXPECT_FALSE(greeting.output.empty());
    }
    RecordingHostFunctions host;
    EXPECT_EQ(ok(call(**prober, "call_host", {std::string("kv_get"), std::string("k")},
                      kGenerousDeadline, &host)),
              Value(std::string("value-of-k")));
    EXPECT_EQ(typeOf(ok(call(**prober, "entropy"))), ValueType::kBytes);
    CallResult fault = call(**spinner, "write_null");
    ASSERT_FALSE(fault.result.ok());
    EXPECT_EQ(fault.result.error().kind, ErrorKind::kGuestFault);
    CallResult spun = call(**spinner, "spin", {}, 200ms);
    ASSERT_FALSE(spun.result.ok());
    EXPECT_EQ(spun.result.error().kind, ErrorKind::kTimeout);
    EXPECT_EQ(ok(call(**spinner, "divide", {int32_t(8), int32_t(2)})), Value(int32_t(4)));
  });
  worker.join();
}

INSTANTIATE_TEST_SUITE_P(Backends, ConformanceTest,
                         ::testing::Values(BackendKind::kEmulated, BackendKind::kKvm), backendName);
INSTANTIATE_TEST_SUITE_P(Backends, MisbehaviourTest,
                         ::testing::Values(BackendKind::kEmulated, BackendKind::kKvm), backendName);

}  // namespace
}  // namespace sandpool::vm
