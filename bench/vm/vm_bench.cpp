// What does a call cost on one VM, and what does a reset cost as a function
// of dirtied pages and of guest memory size? Backend: SANDPOOL_BENCH_BACKEND
// (auto|kvm|emulated; default emulated, so that figures name their backend).
//
//   WarmEmptyCall            a call of a void, argument-less export, reset included
//   Reset/<pages>/<MiB>      reset alone after the guest dirtied <pages> heap pages
//   NewVmFromSnapshot        Sandbox::create over an existing snapshot
//   WarmEmptyCallOnAThread/filter:<0|1>
//                            WarmEmptyCall on a thread of its own, without and
//                            with the workers' system-call filter
//                            (docs/security.md)
#include <benchmark/benchmark.h>

#include <thread>

#include "bench_setup.h"
#include "vm/sandbox.h"
#include "vm/snapshot.h"
#include "vm/syscall_filter.h"

namespace {

using namespace sandpool::vm;

std::shared_ptr<const Snapshot> bootGuest(const std::string& name, uint64_t memory_mib) {
  VmConfig config;
  config.memory_size = memory_mib * kMiB;
  return sandpool::bench::bootBenchGuest(name, config);
}

void WarmEmptyCall(benchmark::State& state) {
  auto vm = sandpool::bench::newBenchVm(bootGuest("echo", 64));
  CallRequest request;
  request.function = "nothing";
  request.startTimeout(sandpool::bench::kBenchCallTimeout);
  vm->call(request);  // translate the dispatcher once, as a warm pool VM has
  for (auto _ : state) {
    CallResult result = vm->call(request);
    if (!result.result) state.SkipWithError(result.result.error().message.c_str());
    benchmark::DoNotOptimize(result);
  }
}
BENCHMARK(WarmEmptyCall)->Repetitions(5)->ReportAggregatesOnly(true);

void Reset(benchmark::State& state) {
  const auto pages = static_cast<uint32_t>(state.range(0));
  auto vm =
      sandpool::bench::newBenchVm(bootGuest("counter", static_cast<uint64_t>(state.range(1))));
  CallRequest request;
  request.function = "touch_pages";
  request.args = {pages};
  request.startTimeout(sandpool::bench::kBenchCallTimeout);
  vm->call(request);
  uint64_t restored = 0;
  for (auto _ : state) {
    CallResult result = vm->call(request);
    if (!result.result) state.SkipWithError(result.result.error().message.c_str());
    state.SetIterationTime(std::chrono::duration<double>(result.stats.reset_time).count());
    restored = result.stats.pages_restored;
  }
  state.counters["pages_restored"] = static_cast<double>(restored);
}
BENCHMARK(Reset)
    ->ArgsProduct({{1, 16, 256}, {64, 1024}})
    ->ArgNames({"pages", "MiB"})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond)
    ->Repetitions(3)
    ->ReportAggregatesOnly(true);

void NewVmFromSnapshot(benchmark::State& state) {
  auto snapshot = bootGuest("echo", 64);
  for (auto _ : state) benchmark::DoNotOptimize(sandpool::bench::newBenchVm(snapshot));
}
BENCHMARK(NewVmFromSnapshot)
    ->Unit(benchmark::kMillisecond)
    ->Repetitions(3)
    ->ReportAggregatesOnly(true);

// The filter stays on the thread that installed it, so the calls run on a
// thread of their own, as the server's workers do.
void WarmEmptyCallOnAThread(benchmark::State& state) {
  const bool filtered = state.range(0) != 0;
  auto vm = sandpool::bench::newBenchVm(bootGuest("echo", 64));
  CallRequest request;
  request.function = "nothing";
  request.startTimeout(sandpool::bench::kBenchCallTimeout);
  std::thread worker([&] {
    if (filtered) {
      auto restricted =
          restrictGuestThread(sandpool::bench::benchBackend().kind(), FilterMode::kKill);
      if (!restricted) {
        state.SkipWithError(restricted.error().message.c_str());
        return;
      }
    }
    vm->call(request);
    for (auto _ : state) {
      CallResult result = vm->call(request);
      if (!result.result) state.SkipWithError(result.result.error().message.c_str());
      benchmark::DoNotOptimize(result);
    }
  });
  worker.join();
}
BENCHMARK(WarmEmptyCallOnAThread)
    ->ArgName("filter")
    ->Arg(0)
    ->Arg(1)
    ->Repetitions(5)
    ->ReportAggregatesOnly(true);

}  // namespace

BENCHMARK_MAIN();
