// How long does a warm call take on KVM, and how many system calls does it
// make? For a host with a real /dev/kvm: under QEMU's software CPU the
// timings say nothing (a KVM_RUN round trip takes milliseconds there), only
// the syscall counts hold.
//
//   kvm_call_bench [--calls N]
//
// Prints, for a call with no host call (probe's heap_bytes) and one with a
// host call (probe's call_host -> an echo host function): latency p50/p99 of
// Sandbox::call, the run and reset parts, pages restored, and syscalls and
// KVM_RUNs per call where the kernel's syscall tracepoints can be opened
// (root, or kernel.perf_event_paranoid=-1).
#include <linux/kvm.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "bench/vm/kvm_syscall_counter.h"
#include "bench_setup.h"
#include "vm/backend.h"
#include "vm/sandbox.h"
#include "vm/snapshot.h"

namespace {

using namespace sandpool::vm;
using Clock = std::chrono::steady_clock;

class Echo final : public HostFunctions {
 public:
  Expected<Value> callHostFunction(std::string_view, std::span<const Value> args) override {
    return args.empty() ? Value(Void{}) : args[0];
  }
};

double micros(std::chrono::nanoseconds ns) { return ns.count() / 1000.0; }

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(p * values.size()))];
}

void measure(const char* name, Sandbox& sandbox, const CallRequest& request, int calls) {
  std::string why_not;
  auto all = sandpool::bench::SyscallCounter::allSyscalls(why_not);
  auto runs = all ? sandpool::bench::SyscallCounter::ioctls(KVM_RUN, why_not) : std::nullopt;
  for (int i = 0; i < 10; ++i) sandbox.call(request);

  std::vector<double> latency, run, reset;
  uint64_t pages = 0, syscalls = 0, kvm_runs = 0, fewest = UINT64_MAX;
  for (int i = 0; i < calls; ++i) {
    const uint64_t all_before = all ? all->read() : 0;
    const uint64_t runs_before = runs ? runs->read() : 0;
    const auto started = Clock::now();
    CallResult result = sandbox.call(request);
    const auto ended = Clock::now();
    const uint64_t runs_after = runs ? runs->read() : 0;
    const uint64_t all_after = all ? all->read() : 0;
    if (!result.result) {
      std::fprintf(stderr, "%s: %s\n", name, result.result.error().describe().c_str());
      std::exit(1);
    }
    latency.push_back(micros(ended - started));
    run.push_back(micros(result.stats.run_time));
    reset.push_back(micros(result.stats.reset_time));
    pages += result.stats.pages_restored;
    if (all && runs) {
      const uint64_t made = all_after - all_before - 2;  // less the KVM_RUN counter's reads
      syscalls += made;
      fewest = std::min(fewest, made);
      kvm_runs += runs_after - runs_before;
    }
  }
  std::printf(
      "%-24s p50 %8.2f us  p99 %8.2f us  (run p50 %.2f us, reset p50 %.2f us)  "
      "%.1f pages restored\n",
      name, percentile(latency, 0.5), percentile(latency, 0.99), percentile(run, 0.5),
      percentile(reset, 0.5), static_cast<double>(pages) / calls);
  if (all && runs) {
    std::printf("%-24s %.2f syscalls per call (fewest %llu), %.2f KVM_RUN per call\n", name,
                static_cast<double>(syscalls) / calls, static_cast<unsigned long long>(fewest),
                static_cast<double>(kvm_runs) / calls);
  } else {
    std::printf("%-24s syscall counts unavailable: %s\n", name, why_not.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  int calls = 10000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--calls") == 0 && i + 1 < argc) {
      calls = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--calls N]\n", argv[0]);
      return 2;
    }
  }
  auto backend = sandpool::bench::orExit(makeKvmBackend(KvmOptions::fromEnvironment()));
  auto snapshot = sandpool::bench::bootBenchGuest(*backend, "probe", VmConfig{});
  auto sandbox = sandpool::bench::newBenchVm(*backend, snapshot);
  std::printf("KVM backend, probe guest, %d warm calls each\n", calls);
  CallRequest plain;
  plain.function = "heap_bytes";
  plain.startTimeout(sandpool::bench::kBenchCallTimeout);
  measure("no host call", *sandbox, plain, calls);
  Echo echo;
  CallRequest host_call;
  host_call.function = "call_host";
  host_call.args = {std::string("echo"), std::string("ping")};
  host_call.host_functions = &echo;
  host_call.startTimeout(sandpool::bench::kBenchCallTimeout);
  measure("one host call", *sandbox, host_call, calls);
  return 0;
}
