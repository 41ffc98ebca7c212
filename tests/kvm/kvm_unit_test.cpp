// The KVM backend's parts that need no /dev/kvm: the page tables it writes,
// the CPUID filter and the errors for a device that cannot be used.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "sandpool/abi.h"
#include "vm/kvm/cpuid.h"
#include "vm/kvm/kvm_backend.h"
#include "vm/kvm/page_tables.h"
#include "vm/kvm/self_test.h"
#include "vm/x86.h"
#include "vm/mapping.h"

namespace sandpool::vm::kvm {
namespace {

struct Translation {
  bool present = false;
  bool writable = false;
  bool executable = false;
  bool large = false;
  uint64_t physical = 0;
};

uint64_t entryAt(const std::vector<uint8_t>& image, uint64_t table, uint64_t index) {
  uint64_t entry;
  std::memcpy(&entry, image.data() + table + index * 8, 8);
  return entry;
}

// Walks the tables the way the MMU does (4-level, 4 KiB and 2 MiB pages).
Translation translate(const std::vector<uint8_t>& image, uint64_t addr) {
  Translation t;
  uint64_t table = kPml4Address;
  bool writable = true, executable = true;
  for (int level = 3; level >= 0; --level) {
    const uint64_t entry = entryAt(image, table, (addr >> (12 + 9 * level)) & 511);
    if (!(entry & x86::kPtePresent)) return t;
    writable &= (entry & x86::kPteWritable) != 0;
    executable &= (entry & x86::kPteNoExecute) == 0;
    if (level == 1 && (entry & x86::kPteLarge)) {
      t = {
          true, writable, executable, true,
          (entry & x86::kPteAddressMask & ~(x86::kLargePage - 1)) | (addr & (x86::kLargePage - 1))};
      return t;
    }
    if (level == 0) {
      t = {true, writable, executable, false, (entry & x86::kPteAddressMask) | (addr & 0xfff)};
      return t;
    }
    table = entry & x86::kPteAddressMask;
  }
  return t;
}

MemoryLayout sampleLayout() {
  MemoryLayout layout;
  layout.memory_size = 64ull << 20;
  layout.regions = {
      Region{0x1000, 0x1000, kAccessRead, "boot info"},
      Region{0x400000, 0x3000, kAccessRead | kAccessExecute, "code"},
      Region{0x403000, 0x1000, kAccessRead, "rodata"},
      Region{0x404000, 0x1fc000, kAccessRead | kAccessWrite, "data"},
      Region{0x600000, 0x3800000, kAccessRead | kAccessWrite, "heap"},  // 2 MiB aligned: large
      Region{0x3f00000, 0xff000, kAccessRead | kAccessWrite, "stack"},  // guard page under it
  };
  layout.regions.back().start += 0x1000;
  return layout;
}

TEST(KvmPageTables, EachPageGetsItsRegionsAccess) {
  const MemoryLayout layout = sampleLayout();
  std::vector<uint8_t> image(layout.memory_size);
  auto stats = buildPageTables(image, layout);
  ASSERT_TRUE(stats.ok()) << stats.error().message;

  EXPECT_FALSE(translate(image, 0).present) << "page 0 must never be mapped";
  Translation boot = translate(image, 0x1000);
  EXPECT_TRUE(boot.present);
  EXPECT_FALSE(boot.writable);
  EXPECT_FALSE(boot.executable);
  for (uint64_t host = SANDPOOL_HOST_AREA_START; host < SANDPOOL_HOST_AREA_END; host += 0x1000) {
    ASSERT_FALSE(translate(image, host).present) << std::hex << host;
  }
  Translation code = translate(image, 0x401234);
  EXPECT_TRUE(code.present);
  EXPECT_FALSE(code.writable);
  EXPECT_TRUE(code.executable);
  EXPECT_EQ(code.physical, 0x401234u) << "identity mapping";
  Translation rodata = translate(image, 0x403000);
  EXPECT_TRUE(rodata.present);
  EXPECT_FALSE(rodata.writable);
  EXPECT_FALSE(rodata.executable);
  Translation data = translate(image, 0x404008);
  EXPECT_TRUE(data.writable);
  EXPECT_FALSE(data.executable);
  Translation heap = translate(image, 0x1234568);
  EXPECT_TRUE(heap.large) << "a whole 2 MiB range of one access is one large page";
  EXPECT_TRUE(heap.writable);
  EXPECT_FALSE(heap.executable);
  EXPECT_EQ(heap.physical, 0x1234568u);
  EXPECT_FALSE(translate(image, 0x3f00000).present) << "guard page";
  Translation stack = translate(image, 0x3fffff8);
  EXPECT_TRUE(stack.writable);
  EXPECT_FALSE(stack.large);
}

TEST(KvmPageTables, UsesLargePagesWhereTheLayoutAllows) {
  const MemoryLayout layout = sampleLayout();
  std::vector<uint8_t> image(layout.memory_size);
  auto stats = buildPageTables(image, layout);
  ASSERT_TRUE(stats.ok());
  // 0x600000..0x3e00000 is 28 whole 2 MiB ranges of heap.
  EXPECT_EQ(stats->large_pages, 28u);
  // PML4, PDPT, one PD, and 4 KiB tables for [0, 2M), [4M, 6M) and [62M, 64M).
  EXPECT_EQ(stats->table_pages, 6u);
}

TEST(KvmPageTables, RefusesWritableAndExecutableRegions) {
  MemoryLayout layout = sampleLayout();
  layout.regions[1].access = kAccessRead | kAccessWrite | kAccessExecute;
  std::vector<uint8_t> image(layout.memory_size);
  auto stats = buildPageTables(image, layout);
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.error().message.find("W^X"), std::string::npos) << stats.error().message;
  EXPECT_NE(stats.error().message.find("code"), std::string::npos);
}

TEST(KvmPageTables, RefusesRegionsInTheHostArea) {
  MemoryLayout layout = sampleLayout();
  layout.regions.insert(layout.regions.begin() + 1, Region{0x3000, 0x1000, kAccessRead, "sneaky"});
  std::vector<uint8_t> image(layout.memory_size);
  auto stats = buildPageTables(image, layout);
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.error().message.find("host area"), std::string::npos) << stats.error().message;
}

TEST(KvmPageTables, RefusesMoreMemoryThanOnePdptMaps) {
  MemoryLayout layout = sampleLayout();
  layout.memory_size = 1024ull << 30;
  std::vector<uint8_t> image(1 << 20);
  auto stats = buildPageTables(image, layout);
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.error().message.find("512 GiB"), std::string::npos) << stats.error().message;
}

TEST(KvmPageTables, RunsOutOfHostAreaWithAClearError) {
  // A page in every 2 MiB range of 1 GiB needs 511 page tables; the host
  // area holds 254.
  MemoryLayout layout;
  layout.memory_size = 1ull << 30;
  for (uint64_t start = 2ull << 20; start < layout.memory_size; start += 2ull << 20) {
    layout.regions.push_back(Region{start, 0x1000, kAccessRead, "scattered"});
  }
  auto image = Mapping::map(layout.memory_size, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, "test image");
  ASSERT_TRUE(image.ok());
  auto stats = buildPageTables(image->bytes(), layout);
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.error().message.find("no room"), std::string::npos) << stats.error().message;
}

TEST(KvmCpuid, HidesVirtualisationXsaveAndAvx) {
  std::vector<kvm_cpuid_entry2> entries(4);
  entries[0].function = 1;
  entries[0].ecx = 0xffffffff;
  entries[0].edx = 0xffffffff;
  entries[1].function = 0x80000001;
  entries[1].ecx = 0xffffffff;
  entries[2].function = 7;
  entries[2].ebx = 0xffffffff;
  entries[3].function = 0xd;
  filterCpuid(entries);
  ASSERT_EQ(entries.size(), 3u) << "leaf 0xd describes XSAVE and goes with it";
  EXPECT_EQ(entries[0].ecx & (x86::cpuid::kVmx | x86::cpuid::kXsave | x86::cpuid::kAvx), 0u);
  EXPECT_EQ(entries[0].edx, 0xffffffffu) << "leaf 1 EDX (SSE, SSE2, ...) is left alone";
  EXPECT_EQ(entries[1].ecx & x86::cpuid::kSvm, 0u);
  EXPECT_EQ(entries[2].ebx & x86::cpuid::kLeaf7EbxAvx, 0u);
  EXPECT_NE(entries[2].ebx, 0u) << "leaf 7 keeps what does not need XSAVE (BMI, ERMS, ...)";
}

TEST(KvmDevice, MissingDeviceSaysSo) {
  auto backend = makeKvmBackendAt("/dev/sandpool-no-such-kvm");
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.error().kind, ErrorKind::kBackendUnavailable);
  EXPECT_NE(backend.error().message.find("ENOENT"), std::string::npos) << backend.error().message;
  EXPECT_NE(backend.error().message.find("offers no KVM"), std::string::npos);
}

TEST(KvmDevice, NonKvmDeviceSaysSo) {
  auto backend = makeKvmBackendAt("/dev/null");
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.error().kind, ErrorKind::kBackendUnavailable);
  EXPECT_NE(backend.error().message.find("not a KVM device"), std::string::npos)
      << backend.error().message;
}

// Opens /dev/kvm as an unprivileged user (a child process drops root), where
// the device exists and that user may not open it.
TEST(KvmDevice, PermissionDeniedSaysSo) {
  if (::access(kKvmDevicePath, F_OK) != 0) GTEST_SKIP() << "no /dev/kvm on this machine";
  if (::geteuid() != 0 && ::access(kKvmDevicePath, R_OK | W_OK) == 0) {
    GTEST_SKIP() << "this user may open /dev/kvm and cannot drop that right";
  }
  constexpr int kSkip = 3, kPassed = 0, kFailed = 1;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(kFailed);
    if (::access(kKvmDevicePath, R_OK | W_OK) == 0) ::_exit(kSkip);
    auto backend = makeKvmBackendAt(kKvmDevicePath);
    const bool refused = !backend.ok() && backend.error().kind == ErrorKind::kBackendUnavailable &&
                         backend.error().message.find("permission denied") != std::string::npos;
    ::_exit(refused ? kPassed : kFailed);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == kSkip) GTEST_SKIP() << "user nobody may open /dev/kvm here";
  EXPECT_EQ(WEXITSTATUS(status), kPassed)
      << "opening /dev/kvm as user nobody did not fail with 'permission denied'";
}

// The self-test's verdicts, one per outcome, from measurements as a hardware
// KVM, kvm-pvm (CPUID ignored, ~200 ms loop, SSE failing) and KVM under
// emulation would give them. The measuring half runs on a real KVM in
// kvm_backend_test (inside QEMU).
SelfTestMeasurement hardwareKvm() {
  SelfTestMeasurement m;
  m.cpuid_leaf1_ecx = 0x7ed8320b & ~x86::cpuid::kLeaf1EcxHidden;
  m.cpuid_leaf7_ebx = 0x219c07ab & ~x86::cpuid::kLeaf7EbxAvx;
  m.fastest_loop = std::chrono::microseconds(45);
  m.loops = 2;
  return m;
}

KvmOptions waived() {
  KvmOptions options;
  options.waive_speed_check = true;
  return options;
}

bool mentions(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(KvmSelfTest, PassesWithFilteredCpuidAndAHardwareSpeedLoop) {
  auto judged = judgeSelfTest(hardwareKvm(), KvmOptions{}, false);
  ASSERT_TRUE(judged.ok()) << judged.error().message;
  EXPECT_TRUE(mentions(*judged, "CPUID filtered")) << *judged;
  EXPECT_TRUE(
      mentions(*judged, "a loop of 100000 iterations took 0.045 ms (fastest of 2; limit 10 ms)"))
      << *judged;
}

TEST(KvmSelfTest, RefusesAKvmThatDoesNotApplyTheCpuidFilter) {
  SelfTestMeasurement m = hardwareKvm();
  *m.cpuid_leaf1_ecx |= x86::cpuid::kXsave | x86::cpuid::kAvx;
  *m.cpuid_leaf7_ebx |= x86::cpuid::kLeaf7EbxAvx2;
  auto judged = judgeSelfTest(m, KvmOptions{}, false);
  ASSERT_FALSE(judged.ok());
  EXPECT_EQ(judged.error().kind, ErrorKind::kBackendUnavailable);
  EXPECT_TRUE(mentions(judged.error().message,
                       "CPUID check: the guest sees features the backend "
                       "hides (XSAVE, AVX, AVX2;"))
      << judged.error().message;
  EXPECT_FALSE(mentions(judged.error().message, "speed check")) << "the loop was fast";
}

TEST(KvmSelfTest, RefusesGuestCodeFarBelowHardwareSpeed) {
  SelfTestMeasurement m = hardwareKvm();
  m.fastest_loop = std::chrono::microseconds(212'500);
  auto judged = judgeSelfTest(m, KvmOptions{}, false);
  ASSERT_FALSE(judged.ok());
  EXPECT_EQ(judged.error().kind, ErrorKind::kBackendUnavailable);
  EXPECT_TRUE(mentions(judged.error().message,
                       "speed check: a loop of 100000 iterations took 212.500 ms (fastest of 2; "
                       "limit 10 ms), so guest code is emulated"))
      << judged.error().message;
  EXPECT_FALSE(mentions(judged.error().message, "CPUID check"));
}

TEST(KvmSelfTest, LoopAtTheLimitIsTooSlow) {
  SelfTestMeasurement m = hardwareKvm();
  m.fastest_loop = kSelfTestLoopLimit;
  EXPECT_FALSE(judgeSelfTest(m, KvmOptions{}, false).ok());
}

TEST(KvmSelfTest, WaivedSpeedCheckAcceptsASlowKvmAndTheReportSaysSo) {
  SelfTestMeasurement m = hardwareKvm();
  m.fastest_loop = std::chrono::milliseconds(40);
  auto judged = judgeSelfTest(m, waived(), false);
  ASSERT_TRUE(judged.ok()) << judged.error().message;
  EXPECT_TRUE(mentions(*judged, "speed check waived as asked (--kvm-speed-check=waive")) << *judged;
  EXPECT_TRUE(mentions(*judged, "took 40.000 ms")) << *judged;
  EXPECT_TRUE(mentions(*judged, "guests run at emulation speed")) << *judged;
}

TEST(KvmSelfTest, WaiverDoesNotExcuseTheCpuidCheck) {
  SelfTestMeasurement m = hardwareKvm();
  *m.cpuid_leaf1_ecx |= x86::cpuid::kVmx;
  auto judged = judgeSelfTest(m, waived(), false);
  ASSERT_FALSE(judged.ok());
  EXPECT_TRUE(mentions(judged.error().message, "hides (VMX;")) << judged.error().message;
}

TEST(KvmSelfTest, AGuestStepThatFailsIsReportedWithWhatWasMeasuredBefore) {
  // kvm-pvm as measured: CPUID not applied, ~200 ms loop, SSE store fails.
  SelfTestMeasurement m = hardwareKvm();
  *m.cpuid_leaf1_ecx |= x86::cpuid::kXsave | x86::cpuid::kOsxsave | x86::cpuid::kAvx;
  *m.cpuid_leaf7_ebx |= x86::cpuid::kLeaf7EbxAvx2;
  m.fastest_loop = std::chrono::microseconds(203'000);
  m.loops = 1;
  m.failed_step =
      "first call, SSE store and DONE: KVM internal error 1 (instruction emulation failed)";
  auto judged = judgeSelfTest(m, KvmOptions{}, true);
  ASSERT_FALSE(judged.ok());
  const std::string& message = judged.error().message;
  EXPECT_TRUE(mentions(message, "CPUID check")) << message;
  EXPECT_TRUE(
      mentions(message, "speed check: a loop of 100000 iterations took 203.000 ms (fastest of 1"))
      << message;
  EXPECT_TRUE(mentions(message, "guest run: first call, SSE store and DONE: KVM internal error 1"))
      << message;
  EXPECT_TRUE(mentions(message,
                       "The kvm_pvm module is loaded: kvm-pvm runs ring-0 guest code through "
                       "KVM's instruction emulator"))
      << message;
}

TEST(KvmSelfTest, NamesKvmPvmOnlyWhereItsModuleIsLoaded) {
  SelfTestMeasurement m = hardwareKvm();
  m.fastest_loop = std::chrono::milliseconds(300);
  auto without = judgeSelfTest(m, KvmOptions{}, false);
  ASSERT_FALSE(without.ok());
  EXPECT_FALSE(mentions(without.error().message, "kvm-pvm")) << without.error().message;
  EXPECT_TRUE(mentions(without.error().message, "use the emulated backend (auto does)"));
}

TEST(KvmSelfTest, BootFailureBeforeAnyMeasurementIsReported) {
  SelfTestMeasurement m;
  m.failed_step = "boot to READY: triple fault";
  auto judged = judgeSelfTest(m, waived(), false);
  ASSERT_FALSE(judged.ok());
  EXPECT_TRUE(mentions(judged.error().message,
                       "KVM self-test failed: guest run: boot to READY: triple fault"))
      << judged.error().message;
}

// This host's own /dev/kvm: where it is kvm-pvm, the backend is refused with
// a message naming it and `auto` falls back to the emulator saying why;
// elsewhere (KVM inside QEMU among them) a refusal does not blame kvm-pvm.
TEST(KvmSelfTest, KvmPvmHostIsRefusedAndAutoFallsBack) {
  if (::access(kKvmDevicePath, R_OK | W_OK) != 0) GTEST_SKIP() << "no open-able /dev/kvm here";
  auto kvm = makeKvmBackendAt(kKvmDevicePath);
  if (!kvmPvmLoaded()) {
    if (!kvm.ok()) {
      EXPECT_FALSE(mentions(kvm.error().message, "kvm-pvm")) << kvm.error().message;
    }
    return;
  }
  ASSERT_FALSE(kvm.ok()) << "kvm-pvm passed the self-test: " << kvm.value()->openingReport();
  EXPECT_TRUE(mentions(kvm.error().message, "KVM self-test failed")) << kvm.error().message;
  EXPECT_TRUE(mentions(kvm.error().message, "kvm-pvm")) << kvm.error().message;
  std::string because;
  auto chosen = openBackend(BackendChoice::kAuto, because);
  ASSERT_TRUE(chosen.ok());
  EXPECT_EQ(chosen.value()->kind(), BackendKind::kEmulated);
  EXPECT_TRUE(mentions(because, "KVM self-test failed")) << because;
}

}  // namespace
}  // namespace sandpool::vm::kvm
