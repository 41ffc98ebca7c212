// Wasm guests: what is refused before any tool runs, and translated modules
// booted, called, trapped and reset on the emulated backend.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "backend_test.h"
#include "vm/backend.h"
#include "vm/guest_image.h"
#include "vm/host_functions.h"
#include "vm/sandbox.h"
#include "vm/snapshot.h"
#include "vm/value_text.h"
#include "wasm/glue_writer.h"
#include "wasm/module.h"
#include "wasm/translator.h"

namespace sandpool::wasm {
namespace {

using namespace std::chrono_literals;
using vm::ErrorKind;
using vm::Value;

using sandpool::testing::kGenerousDeadline;

std::vector<uint8_t> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "missing " << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
std::vector<uint8_t> testModule(const std::string& name) {
  return readFile(std::string(SANDPOOL_WASM_MODULE_DIR) + "/" + name + ".wasm");
}
std::vector<uint8_t> example(const std::string& name) {
  return readFile(std::string(SANDPOOL_WASM_EXAMPLE_DIR) + "/" + name + ".wasm");
}

// A toolchain whose tools cannot run: proves a refusal came before them.
Toolchain missingTools() {
  Toolchain tools = defaultToolchain();
  tools.wasm2c = "/nonexistent/wasm2c";
  tools.cc = "/nonexistent/cc";
  return tools;
}

TEST(WasmModule, RecognisedByMagic) {
  EXPECT_TRUE(isWasmModule(testModule("traps")));
  EXPECT_FALSE(isWasmModule(std::vector<uint8_t>{0x7f, 'E', 'L', 'F'}));
}

TEST(WasmModule, TruncatedSectionIsRefusedNamingIt) {
  auto bytes = testModule("traps");
  bytes.resize(20);
  auto module = parseModule(bytes);
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.error().kind, ErrorKind::kInvalidGuest);
  EXPECT_NE(module.error().message.find("section body"), std::string::npos)
      << module.error().message;
}

TEST(WasmModule, ManglingMatchesWasm2c) {
  EXPECT_EQ(mangle("add"), "Z_add");
  EXPECT_EQ(mangle("greet(string)->string"), "Z_greetZ28stringZ29Z2DZ3Estring");
  EXPECT_EQ(mangle("a_Zb.c"), "Z_a_Z5AbZ2Ec");
}

TEST(WasmTranslate, ImportFromAnotherModuleIsRefusedBeforeAnyToolRuns) {
  auto image = translateModule(testModule("import_env"), missingTools(), {});
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.error().kind, ErrorKind::kInvalidGuest);
  EXPECT_NE(image.error().message.find("'env'.'getenv_secret'"), std::string::npos)
      << image.error().message;
}

TEST(WasmTranslate, NameWasiPreview1DoesNotHaveIsRefusedBeforeAnyToolRuns) {
  auto image = translateModule(testModule("import_wasi_unknown"), missingTools(), {});
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.error().kind, ErrorKind::kInvalidGuest);
  EXPECT_NE(image.error().message.find(
                "'wasi_snapshot_preview1'.'get_secret' is not a WASI preview 1 function"),
            std::string::npos)
      << image.error().message;
}

TEST(WasmTranslate, MemoryImportIsRefusedNamingIt) {
  auto image = translateModule(testModule("import_memory"), missingTools(), {});
  ASSERT_FALSE(image.ok());
  EXPECT_NE(image.error().message.find("'sandpool'.'memory' is not a function"), std::string::npos)
      << image.error().message;
}

TEST(WasmTranslate, OversizedModuleIsRefusedBeforeAnyToolRuns) {
  TranslationLimits limits;
  limits.max_module_size = 16;
  auto image = translateModule(testModule("traps"), missingTools(), limits);
  ASSERT_FALSE(image.ok());
  EXPECT_NE(image.error().message.find("exceeds the limit of 16"), std::string::npos)
      << image.error().message;
}

TEST(WasmTranslate, MalformedModuleFailsInWasm2cWithItsMessage) {
  auto bytes = testModule("traps");
  bytes.back() ^= 0xff;  // the last instruction byte of the last function body
  auto image = translateModule(bytes, defaultToolchain(), {});
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.error().kind, ErrorKind::kInvalidGuest);
  EXPECT_NE(image.error().message.find("wasm2c failed"), std::string::npos)
      << image.error().message;
}

TEST(WasmTranslate, ElfUploadPassesThroughUnchanged) {
  const std::vector<uint8_t> elf = {0x7f, 'E', 'L', 'F', 2, 1, 1};
  auto image = guestImageFromUpload(elf);
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(*image, elf);
}

// Doubles an i64 for the "sandpool"."twice" import.
class TwiceHost : public vm::HostFunctions {
 public:
  vm::Expected<Value> callHostFunction(std::string_view name,
                                       std::span<const Value> args) override {
    if (name != "twice" || args.size() != 1)
      return vm::makeError(ErrorKind::kBadHostCall, "unknown");
    return Value(std::get<int64_t>(args[0]) * 2);
  }
};

class WasmGuestTest : public ::testing::Test {
 protected:
  void SetUp() override { backend_ = vm::makeEmulatedBackend(); }

  std::unique_ptr<vm::Sandbox> boot(std::vector<uint8_t> module) {
    auto elf = guestImageFromUpload(std::move(module));
    EXPECT_TRUE(elf.ok()) << elf.error().describe();
    if (!elf) return nullptr;
    vm::VmConfig config;
    config.boot_timeout = kGenerousDeadline;
    auto image = vm::GuestImage::parse(*elf, config);
    EXPECT_TRUE(image.ok()) << image.error().describe();
    if (!image) return nullptr;
    auto snapshot = vm::Snapshot::boot(*backend_, *image, config);
    EXPECT_TRUE(snapshot.ok()) << snapshot.error().describe();
    if (!snapshot) return nullptr;
    snapshot_ = *snapshot;
    auto sandbox = vm::Sandbox::create(*backend_, snapshot_);
    EXPECT_TRUE(sandbox.ok()) << sandbox.error().describe();
    return sandbox ? std::move(sandbox.value()) : nullptr;
  }

  static vm::CallResult call(vm::Sandbox& sandbox, std::string function,
                             std::vector<Value> args = {},
                             std::chrono::nanoseconds timeout = kGenerousDeadline,
                             vm::HostFunctions* host = nullptr) {
    return sandpool::testing::callGuest(sandbox, std::move(function), std::move(args), timeout,
                                        host);
  }

  static void expectTrap(vm::Sandbox& sandbox, const std::string& function, const std::string& trap,
                         std::vector<Value> args = {}) {
    auto result = call(sandbox, function, std::move(args));
    ASSERT_FALSE(result.result.ok()) << function;
    EXPECT_EQ(result.result.error().kind, ErrorKind::kGuestAbort);
    EXPECT_NE(result.result.error().message.find("wasm trap: " + trap), std::string::npos)
        << result.result.error().message;
  }

  // The same checks for the C and the Rust examples of each kind.
  static void expectKnownSha256Digests(vm::Sandbox& vm) {
    const std::pair<vm::Bytes, std::string> cases[] = {
        {{}, "0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {{'a', 'b', 'c'}, "0xba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {vm::Bytes(1000000, 'a'),
         "0xcdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"}};
    for (const auto& [input, expected] : cases) {
      auto digest = call(vm, "sha256", {Value(input)});
      ASSERT_TRUE(digest.result.ok()) << digest.result.error().describe();
      EXPECT_EQ(vm::formatValue(*digest.result), expected) << input.size() << " bytes";
    }
  }

  static void expectEveryCallStartsFromTheInitialisedCounter(vm::Sandbox& vm) {
    for (int i = 0; i < 3; i++) {
      auto result = call(vm, "increment");
      ASSERT_TRUE(result.result.ok()) << result.result.error().describe();
      EXPECT_EQ(std::get<int32_t>(*result.result), 41);
    }
  }

  std::unique_ptr<vm::Backend> backend_;
  std::shared_ptr<const vm::Snapshot> snapshot_;
};

TEST_F(WasmGuestTest, GreetingTakesAStringReturnsAStringAndPrintsThroughWasi) {
  auto vm = boot(example("greeting"));
  ASSERT_TRUE(vm);
  auto result = call(*vm, "greet", {Value(std::string("Wasm"))});
  ASSERT_TRUE(result.result.ok()) << result.result.error().describe();
  EXPECT_EQ(std::get<std::string>(*result.result), "Hello, Wasm!");
  EXPECT_EQ(result.output, "greeting Wasm\n");
}

constexpr const char* kNoRustExamples =
    "the Rust examples were not built: no rustc with the wasm32-wasi standard library (Debian "
    "packages rustc, libstd-rust-dev-wasm32)";

TEST_F(WasmGuestTest, RustGreetingTakesAStringReturnsAStringAndPrintsThroughWasi) {
#ifndef SANDPOOL_WASM_RUST_EXAMPLES
  GTEST_SKIP() << kNoRustExamples;
#endif
  auto vm = boot(example("rust_greeting"));
  ASSERT_TRUE(vm);
  for (const std::string name : {"Ferris", "again"}) {
    auto result = call(*vm, "greet", {Value(name)});
    ASSERT_TRUE(result.result.ok()) << result.result.error().describe();
    EXPECT_EQ(std::get<std::string>(*result.result), "Hello, " + name + ", from Rust!");
    EXPECT_EQ(result.output, "greeting " + name + " from Rust\n");
  }
}

TEST_F(WasmGuestTest, NumericExportsAreListedWithTheirSignatures) {
  auto vm = boot(example("greeting"));
  ASSERT_TRUE(vm);
  std::vector<std::string> listed;
  for (const auto& sig : snapshot_->exports()) listed.push_back(sig.describe());
  EXPECT_NE(std::find(listed.begin(), listed.end(), "add(i32, i32) -> i32"), listed.end())
      << ::testing::PrintToString(listed);
  EXPECT_NE(std::find(listed.begin(), listed.end(), "greet(string) -> string"), listed.end())
      << ::testing::PrintToString(listed);
  auto sum = call(*vm, "add", {Value(int32_t(40)), Value(int32_t(2))});
  ASSERT_TRUE(sum.result.ok()) << sum.result.error().describe();
  EXPECT_EQ(std::get<int32_t>(*sum.result), 42);
}

TEST_F(WasmGuestTest, RandomGetIsFreshForEveryCall) {
  auto vm = boot(example("greeting"));
  ASSERT_TRUE(vm);
  auto first = call(*vm, "random");
  auto second = call(*vm, "random");
  ASSERT_TRUE(first.result.ok() && second.result.ok());
  EXPECT_NE(std::get<int64_t>(*first.result), std::get<int64_t>(*second.result));
}

TEST_F(WasmGuestTest, ComputeKernelHashesBytes) {
  auto vm = boot(example("checksum"));
  ASSERT_TRUE(vm);
  auto hash = call(*vm, "fnv1a", {Value(vm::Bytes{'a'})});
  ASSERT_TRUE(hash.result.ok()) << hash.result.error().describe();
  EXPECT_EQ(uint64_t(std::get<int64_t>(*hash.result)), 0xaf63dc4c8601ec8cull);  // FNV-1a 64 of "a"
  auto floors = call(*vm, "floor_sum", {Value(0.5), Value(int32_t(5))});
  ASSERT_TRUE(floors.result.ok()) << floors.result.error().describe();
  EXPECT_EQ(std::get<double>(*floors.result), 0 + 0 + 1 + 1 + 2);
}

TEST_F(WasmGuestTest, Sha256KernelMatchesKnownDigests) {
  auto vm = boot(example("sha256"));
  ASSERT_TRUE(vm);
  expectKnownSha256Digests(*vm);
}

TEST_F(WasmGuestTest, StateSetAtInitialisationIsFreshForEveryCall) {
  auto vm = boot(example("counter"));
  ASSERT_TRUE(vm);
  expectEveryCallStartsFromTheInitialisedCounter(*vm);
}

TEST_F(WasmGuestTest, RustSha256MatchesKnownDigests) {
#ifndef SANDPOOL_WASM_RUST_EXAMPLES
  GTEST_SKIP() << kNoRustExamples;
#endif
  auto vm = boot(example("rust_sha256"));
  ASSERT_TRUE(vm);
  expectKnownSha256Digests(*vm);
}

TEST_F(WasmGuestTest, RustStateSetAtInitialisationIsFreshForEveryCall) {
#ifndef SANDPOOL_WASM_RUST_EXAMPLES
  GTEST_SKIP() << kNoRustExamples;
#endif
  auto vm = boot(example("rust_counter"));
  ASSERT_TRUE(vm);
  expectEveryCallStartsFromTheInitialisedCounter(*vm);
}

TEST_F(WasmGuestTest, EachTrapIsATypedErrorNamingItAndTheVmServesOn) {
  auto vm = boot(testModule("traps"));
  ASSERT_TRUE(vm);
  expectTrap(*vm, "unreachable", "unreachable executed");
  expectTrap(*vm, "out_of_bounds", "out of bounds");
  expectTrap(*vm, "divide_by_zero", "integer divide by zero", {Value(int32_t(0))});
  expectTrap(*vm, "overflow", "integer overflow");
  expectTrap(*vm, "stack_exhaustion", "call stack exhausted");
  expectTrap(*vm, "indirect_mismatch", "indirect call type mismatch");
  auto fine = call(*vm, "divide_by_zero", {Value(int32_t(1))});
  ASSERT_TRUE(fine.result.ok()) << fine.result.error().describe();
  EXPECT_EQ(std::get<int32_t>(*fine.result), 1);
}

TEST_F(WasmGuestTest, MemoryGrowPastGuestMemoryReturnsMinusOne) {
  auto vm = boot(testModule("traps"));
  ASSERT_TRUE(vm);
  auto small = call(*vm, "grow", {Value(int32_t(1))});
  ASSERT_TRUE(small.result.ok()) << small.result.error().describe();
  EXPECT_EQ(std::get<int32_t>(*small.result), 1);          // the old size in pages
  auto huge = call(*vm, "grow", {Value(int32_t(60000))});  // 3.7 GiB
  ASSERT_TRUE(huge.result.ok()) << huge.result.error().describe();
  EXPECT_EQ(std::get<int32_t>(*huge.result), -1);
}

TEST_F(WasmGuestTest, RunawayLoopTimesOutAndTheVmServesOn) {
  auto vm = boot(testModule("traps"));
  ASSERT_TRUE(vm);
  auto spin = call(*vm, "spin", {}, 100ms);
  ASSERT_FALSE(spin.result.ok());
  EXPECT_EQ(spin.result.error().kind, ErrorKind::kTimeout);
  auto fine = call(*vm, "grow", {Value(int32_t(0))});
  ASSERT_TRUE(fine.result.ok()) << fine.result.error().describe();
}

TEST_F(WasmGuestTest, SandpoolImportsAreHostCallsAndOtherWasiFunctionsAnswerWithAnErrno) {
  auto vm = boot(testModule("import_host"));
  ASSERT_TRUE(vm);
  TwiceHost host;
  auto twice = call(*vm, "call_twice", {Value(int64_t(21))}, kGenerousDeadline, &host);
  ASSERT_TRUE(twice.result.ok()) << twice.result.error().describe();
  EXPECT_EQ(std::get<int64_t>(*twice.result), 42);
  auto closed = call(*vm, "close_errno");
  ASSERT_TRUE(closed.result.ok()) << closed.result.error().describe();
  EXPECT_EQ(std::get<int32_t>(*closed.result), 8);  // EBADF: no descriptor 3
}

TEST_F(WasmGuestTest, WasiFunctionsOutsideTheSubsetUploadAndAnswerWithAnErrno) {
  auto vm = boot(testModule("import_path_open"));
  ASSERT_TRUE(vm);
  auto opened = call(*vm, "open_errno");
  ASSERT_TRUE(opened.result.ok()) << opened.result.error().describe();
  EXPECT_EQ(std::get<int32_t>(*opened.result), 8);  // EBADF: no preopened folder
  auto yielded = call(*vm, "yield_errno");
  ASSERT_TRUE(yielded.result.ok()) << yielded.result.error().describe();
  EXPECT_EQ(std::get<int32_t>(*yielded.result), 0);
}

// Looks keys up for the "sandpool"."kv_get(string)->string" import.
class KvHost : public vm::HostFunctions {
 public:
  vm::Expected<Value> callHostFunction(std::string_view name,
                                       std::span<const Value> args) override {
    if (name != "kv_get" || args.size() != 1 || !std::holds_alternative<std::string>(args[0]))
      return vm::makeError(ErrorKind::kBadHostCall, "unknown");
    const auto& key = std::get<std::string>(args[0]);
    if (key != "color") return vm::makeError(ErrorKind::kBadHostCall, "no key '" + key + "'");
    return Value(std::string("blue"));
  }
};

TEST_F(WasmGuestTest, SandpoolImportTakesAStringAndReturnsAString) {
  auto vm = boot(testModule("host_strings"));
  ASSERT_TRUE(vm);
  KvHost host;
  auto found = call(*vm, "lookup", {Value(std::string("color"))}, kGenerousDeadline, &host);
  ASSERT_TRUE(found.result.ok()) << found.result.error().describe();
  EXPECT_EQ(std::get<std::string>(*found.result), "blue");
  auto missing = call(*vm, "lookup", {Value(std::string("shape"))}, kGenerousDeadline, &host);
  ASSERT_FALSE(missing.result.ok());
  EXPECT_EQ(missing.result.error().kind, ErrorKind::kGuestAbort);
  EXPECT_NE(missing.result.error().message.find("wasm import: "), std::string::npos)
      << missing.result.error().message;
  EXPECT_NE(missing.result.error().message.find("no key 'shape'"), std::string::npos)
      << missing.result.error().message;
}

TEST_F(WasmGuestTest, SandpoolImportGivenMemoryOutsideLinearMemoryTrapsAndTheVmServesOn) {
  auto vm = boot(testModule("host_strings"));
  ASSERT_TRUE(vm);
  KvHost host;
  for (const char* function : {"lookup_outside", "lookup_overlong"}) {
    auto result = call(*vm, function, {}, kGenerousDeadline, &host);
    ASSERT_FALSE(result.result.ok()) << function;
    EXPECT_EQ(result.result.error().kind, ErrorKind::kGuestAbort);
    EXPECT_NE(result.result.error().message.find("wasm trap: out of bounds memory"),
              std::string::npos)
        << result.result.error().message;
  }
  auto found = call(*vm, "lookup", {Value(std::string("color"))}, kGenerousDeadline, &host);
  ASSERT_TRUE(found.result.ok()) << found.result.error().describe();
  EXPECT_EQ(std::get<std::string>(*found.result), "blue");
}

TEST(WasmTranslate, StringImportWithoutAnAllocatorIsRefusedNamingIt) {
  Module module;
  module.types = {FuncType{{ValType::kI32, ValType::kI32}, {ValType::kI64}}};
  module.imports = {Import{"sandpool", "kv_get(string)->string", ExternKind::kFunction, 0}};
  module.function_types = {0};
  module.exports = {Export{"memory", ExternKind::kMemory, 0}};
  auto glue = writeGlue(module);
  ASSERT_FALSE(glue.ok());
  EXPECT_NE(glue.error().message.find("import 'sandpool'.'kv_get' copies strings or bytes"),
            std::string::npos)
      << glue.error().message;
}

TEST(WasmTranslate, ImportDeclaringASignatureItsTypeDoesNotMatchIsRefused) {
  Module module;
  module.types = {FuncType{{ValType::kI32}, {ValType::kI64}}};
  module.imports = {Import{"sandpool", "kv_get(string)->string", ExternKind::kFunction, 0}};
  module.function_types = {0};
  auto glue = writeGlue(module);
  ASSERT_FALSE(glue.ok());
  EXPECT_NE(glue.error().message.find("import 'sandpool'.'kv_get(string)->string' declares"),
            std::string::npos)
      << glue.error().message;
}

}  // namespace
}  // namespace sandpool::wasm
