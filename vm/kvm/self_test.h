// Proves a /dev/kvm runs sandpool guests the way the backend needs before the
// backend is offered. Not every /dev/kvm does. Measured on kvm-pvm (the
// paravirtual KVM of this project's development machines, Linux 6.18): it
// accepts every ioctl and its dirty log works, but it runs ring-0 guest code
// (all of a sandpool guest) through KVM's instruction emulator, at 1-4 us per
// instruction, and that emulator lacks most SSE instructions (`stmxcsr` right
// after READY fails with "KVM internal error 1 (instruction emulation
// failed)"); it also ignores the CPUID the backend sets, so the guest sees
// XSAVE, AVX and AVX2. Guests built without vectorisation boot there, but a
// warm call costs ~250 us against ~2 us on the emulated backend. So the test
// checks what such a KVM gets wrong, not only that a guest runs:
//
//   - CPUID: the guest must not see a feature the backend hides (cpuid.h);
//   - speed: a loop of kSelfTestLoopIterations must take less than
//     kSelfTestLoopLimit (hardware: ~0.05 ms; kvm-pvm: ~200 ms), best of up to
//     kSelfTestCalls calls, so one preempted run on a busy host does not
//     refuse a good KVM. KvmOptions::waive_speed_check accepts a slow KVM
//     (KVM under software emulation in the test suite) and the report says so;
//   - SSE loads and stores to a dirty-logged page, an `out` exit, a reset and
//     the same again.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "vm/backend.h"

namespace sandpool::vm::kvm {

class KvmBackend;

inline constexpr uint32_t kSelfTestLoopIterations = 100000;
inline constexpr std::chrono::milliseconds kSelfTestLoopLimit{10};
inline constexpr int kSelfTestCalls = 3;

// What the self-test guest did on this KVM. Fields stay empty where the guest
// stopped before reaching them.
struct SelfTestMeasurement {
  std::optional<uint32_t> cpuid_leaf1_ecx;  // as the guest's `cpuid` returned them
  std::optional<uint32_t> cpuid_leaf7_ebx;
  std::optional<std::chrono::nanoseconds> fastest_loop;
  int loops = 0;
  std::string failed_step;  // "<step>: <what the exit said>"; empty when every step ran
};

// Runs the self-test guest in a throw-away micro-VM. Errors only for host-side
// failures (memfd, mapping); what the guest did is in the measurement.
Expected<SelfTestMeasurement> measureSelfTest(KvmBackend& backend);

// The verdict on a measurement: a one-line report for the start-up log, or a
// kBackendUnavailable error naming every check that failed and what was
// measured, and kvm-pvm with its known behaviour where `kvm_pvm_loaded`.
Expected<std::string> judgeSelfTest(const SelfTestMeasurement& measured, const KvmOptions& options,
                                    bool kvm_pvm_loaded);

// Whether this host's kernel has the kvm-pvm module loaded.
bool kvmPvmLoaded();

// measureSelfTest() then judgeSelfTest() for this host.
Expected<std::string> runSelfTest(KvmBackend& backend, const KvmOptions& options);

}  // namespace sandpool::vm::kvm
