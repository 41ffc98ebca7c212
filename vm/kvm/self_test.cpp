#include "vm/kvm/self_test.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "vm/kvm/cpuid.h"
#include "vm/kvm/kvm_backend.h"
#include "vm/kvm/kvm_ioctl.h"
#include "vm/mapping.h"
#include "vm/unique_fd.h"

namespace sandpool::vm::kvm {
namespace {

using Ms = std::chrono::duration<double, std::milli>;

constexpr uint64_t kMemory = 8ull << 20;
constexpr uint64_t kCode = 0x400000;
constexpr uint64_t kData = 0x600000;
constexpr uint32_t kMxcsrDefault = 0x1f80;

// The self-test guest's own ports (it is not an SDK guest).
enum Port : uint16_t {
  kReady = 0x5500,  // the reset point
  kDone = 0x5501,
  kLeaf1Ecx = 0x5502,
  kLeaf7Ebx = 0x5503,
  kLoopStart = 0x5504,
  kLoopEnd = 0x5505,
};

// mov edx, 0x5500; out dx, eax                          READY
// mov eax, 1; xor ecx, ecx; cpuid; mov eax, ecx;
//   mov edx, 0x5502; out dx, eax                        leaf 1 ECX
// mov eax, 7; xor ecx, ecx; cpuid; mov eax, ebx;
//   mov edx, 0x5503; out dx, eax                        leaf 7 EBX
// mov edx, 0x5504; out dx, eax                          loop start
// mov ecx, 100000; 1: dec ecx; jnz 1b
// mov edx, 0x5505; out dx, eax                          loop end
// stmxcsr [0x600000]; movups [0x600010], xmm0
// mov eax, [0x600000]; mov edx, 0x5501; out dx, eax; hlt   DONE(mxcsr)
constexpr uint8_t kProgram[] = {
    0xba, 0x00, 0x55, 0x00, 0x00, 0xef, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x31, 0xc9, 0x0f, 0xa2, 0x89,
    0xc8, 0xba, 0x02, 0x55, 0x00, 0x00, 0xef, 0xb8, 0x07, 0x00, 0x00, 0x00, 0x31, 0xc9, 0x0f, 0xa2,
    0x89, 0xd8, 0xba, 0x03, 0x55, 0x00, 0x00, 0xef, 0xba, 0x04, 0x55, 0x00, 0x00, 0xef, 0xb9, 0xa0,
    0x86, 0x01, 0x00, 0xff, 0xc9, 0x75, 0xfc, 0xba, 0x05, 0x55, 0x00, 0x00, 0xef, 0x0f, 0xae, 0x1c,
    0x25, 0x00, 0x00, 0x60, 0x00, 0x0f, 0x11, 0x04, 0x25, 0x10, 0x00, 0x60, 0x00, 0x8b, 0x04, 0x25,
    0x00, 0x00, 0x60, 0x00, 0xba, 0x01, 0x55, 0x00, 0x00, 0xef, 0xf4,
};
static_assert(kSelfTestLoopIterations == 0x186a0, "the loop count is encoded in kProgram");

class LastOut final : public PortHandler {
 public:
  uint16_t port = 0;
  uint32_t value = 0;
  PortAction onPortOut(uint16_t p, uint32_t v) override {
    port = p;
    value = v;
    return PortAction::kStop;
  }
};

// Runs the guest to its next `out`, which must be on `port`: its value, or
// what went wrong as "<step>: <reason>".
Expected<uint32_t> runToOut(MicroVm& vcpu, uint16_t port, const std::string& step) {
  LastOut out;
  RunExit exit = vcpu.run(out);
  if (exit.kind != RunExit::Kind::kStopped) {
    return makeError(
        ErrorKind::kBackendUnavailable,
        fmt::format("{}: {}", step, exit.kind == RunExit::Kind::kFault ? exit.reason : "timeout"));
  }
  if (out.port != port) {
    return makeError(ErrorKind::kBackendUnavailable,
                     fmt::format("{}: out to port {:#x}, expected {:#x}", step, out.port, port));
  }
  return out.value;
}

// One call from the reset point: CPUID, the timed loop, SSE, DONE.
Expected<void> measureCall(MicroVm& vcpu, const std::string& call, SelfTestMeasurement& m) {
  auto leaf1 = runToOut(vcpu, kLeaf1Ecx, fmt::format("{}, cpuid leaf 1", call));
  if (!leaf1) return leaf1.takeError();
  m.cpuid_leaf1_ecx = *leaf1;
  auto leaf7 = runToOut(vcpu, kLeaf7Ebx, fmt::format("{}, cpuid leaf 7", call));
  if (!leaf7) return leaf7.takeError();
  m.cpuid_leaf7_ebx = *leaf7;
  if (auto start = runToOut(vcpu, kLoopStart, fmt::format("{}, loop start", call)); !start)
    return start.takeError();
  const auto started = std::chrono::steady_clock::now();
  if (auto end = runToOut(vcpu, kLoopEnd, fmt::format("{}, loop", call)); !end)
    return end.takeError();
  const auto took = std::chrono::steady_clock::now() - started;
  m.fastest_loop = m.fastest_loop ? std::min(*m.fastest_loop, took) : took;
  m.loops++;
  auto done = runToOut(vcpu, kDone, fmt::format("{}, SSE store and DONE", call));
  if (!done) return done.takeError();
  if (*done != kMxcsrDefault) {
    return makeError(ErrorKind::kBackendUnavailable,
                     fmt::format("{}, SSE store and DONE: mxcsr read back as {:#x}, expected {:#x}",
                                 call, *done, kMxcsrDefault));
  }
  return {};
}

std::string describeLoop(const SelfTestMeasurement& m) {
  return fmt::format("a loop of {} iterations took {:.3f} ms (fastest of {}; limit {} ms)",
                     kSelfTestLoopIterations, Ms(*m.fastest_loop).count(), m.loops,
                     kSelfTestLoopLimit.count());
}

}  // namespace

Expected<SelfTestMeasurement> measureSelfTest(KvmBackend& backend) {
  UniqueFd memfd(::memfd_create("sandpool-kvm-self-test", MFD_CLOEXEC));
  if (!memfd.valid() || ::ftruncate(memfd.get(), kMemory) != 0) {
    return makeError(ErrorKind::kInternal, fmt::format("KVM self-test: memfd of {} bytes: {}",
                                                       kMemory, errnoText(errno)));
  }
  MemoryLayout layout;
  layout.memory_size = kMemory;
  layout.regions = {Region{kCode, kPageSize, kAccessRead | kAccessExecute, "code"},
                    Region{kData, kPageSize, kAccessRead | kAccessWrite, "data"}};
  auto contents =
      Mapping::map(kMemory, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), "KVM self-test image");
  if (!contents) return contents.takeError();
  if (auto prepared = backend.prepareImage(contents->bytes(), layout); !prepared) {
    return prepared.takeError();
  }
  std::memcpy(contents->data() + kCode, kProgram, sizeof(kProgram));

  auto memory = GuestMemory::mapPrivate(memfd.get(), kMemory, PROT_READ | PROT_WRITE);
  if (!memory) return memory.takeError();
  auto vcpu = backend.createMicroVm(*memory, layout, kCode);
  if (!vcpu) return vcpu.takeError();

  SelfTestMeasurement m;
  // Records the first step that failed, as "<step>: <error>" where `step`
  // is given (the step's own errors name it otherwise); true if it ran.
  auto ran = [&m](const auto& result, const std::string& step) {
    if (!result)
      m.failed_step = step.empty() ? result.error().message
                                   : fmt::format("{}: {}", step, result.error().message);
    return result.ok();
  };
  if (!ran(runToOut(**vcpu, kReady, "boot to READY"), "")) return m;
  if (!ran((*vcpu)->armReset(contents->bytes()), "arming the reset")) return m;
  // At least two calls, so one runs after a reset; more only while the loop
  // has not yet come in under the limit once.
  for (int call = 0; call < kSelfTestCalls; call++) {
    const std::string name = call == 0 ? "first call" : fmt::format("call {} after a reset", call);
    if (!ran(measureCall(**vcpu, name, m), "")) return m;
    if (!ran((*vcpu)->reset(), fmt::format("{}, reset", name))) return m;
    if (call >= 1 && *m.fastest_loop < kSelfTestLoopLimit) break;
  }
  return m;
}

Expected<std::string> judgeSelfTest(const SelfTestMeasurement& m, const KvmOptions& options,
                                    bool kvm_pvm_loaded) {
  std::vector<std::string> failed;
  std::string passed = "KVM self-test";
  if (m.cpuid_leaf1_ecx && m.cpuid_leaf7_ebx) {
    auto seen = hiddenFeaturesSeen(*m.cpuid_leaf1_ecx, *m.cpuid_leaf7_ebx);
    if (!seen.empty()) {
      failed.push_back(fmt::format(
          "CPUID check: the guest sees features the backend hides ({}; leaf 1 ECX {:#x}, leaf 7 "
          "EBX {:#x}), so this KVM does not apply the CPUID it is given",
          fmt::join(seen, ", "), *m.cpuid_leaf1_ecx, *m.cpuid_leaf7_ebx));
    } else {
      passed += ": CPUID filtered";
    }
  }
  if (m.fastest_loop) {
    const bool slow = *m.fastest_loop >= kSelfTestLoopLimit;
    if (slow && !options.waive_speed_check) {
      failed.push_back(fmt::format(
          "speed check: {}, so guest code is emulated, not run by the hardware", describeLoop(m)));
    } else if (slow) {
      passed += fmt::format(
          "; speed check waived as asked (--kvm-speed-check=waive or "
          "SANDPOOL_KVM_SPEED_CHECK=waive): {}, guests run at emulation speed",
          describeLoop(m));
    } else {
      passed += fmt::format("; {}", describeLoop(m));
    }
  }
  if (!m.failed_step.empty()) failed.push_back(fmt::format("guest run: {}", m.failed_step));
  if (failed.empty()) return passed;
  std::string message = fmt::format("KVM self-test failed: {}", fmt::join(failed, "; "));
  if (kvm_pvm_loaded) {
    message +=
        ". The kvm_pvm module is loaded: kvm-pvm runs ring-0 guest code through KVM's "
        "instruction emulator (1-4 us per instruction, most SSE instructions unsupported) and "
        "does not apply the CPUID it is given; use the emulated backend (auto does)";
  } else {
    message += "; use the emulated backend (auto does)";
  }
  return makeError(ErrorKind::kBackendUnavailable, std::move(message));
}

bool kvmPvmLoaded() {
  std::error_code ec;
  return std::filesystem::exists("/sys/module/kvm_pvm", ec);
}

Expected<std::string> runSelfTest(KvmBackend& backend, const KvmOptions& options) {
  auto measured = measureSelfTest(backend);
  if (!measured) return measured.takeError();
  return judgeSelfTest(*measured, options, kvmPvmLoaded());
}

}  // namespace sandpool::vm::kvm
