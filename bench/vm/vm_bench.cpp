// What does a call cost on one VM, and what does a reset cost as a function
// of dirtied pages and of guest memory size? Backend: SANDPOOL_BENCH_BACKEND
// (auto|kvm|emulated; default emulated, so that figures name their backend).
//
//   WarmEmptyCall            a call of a void, argument-less export, reset included
//   Reset/<pages>/<MiB>      reset alone after the guest dirtied <pages> heap pages
//   NewVmFromSnapshot        Sandbox::create over an existing snapshot
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <iostream>

#include "guest_files.h"
#include "vm/backend.h"
#include "vm/guest_image.h"
#include "vm/sandbox.h"
#include "vm/snapshot.h"

namespace {

using namespace sandpool::vm;

Backend& backend() {
  static std::unique_ptr<Backend> instance = [] {
    const char* env = std::getenv("SANDPOOL_BENCH_BACKEND");
    BackendChoice choice = BackendChoice::kEmulated;
    if (env && !parseBackendChoice(env, choice)) {
      std::cerr << "unknown SANDPOOL_BENCH_BACKEND '" << env << "'\n";
      std::exit(2);
    }
    std::string why;
    auto opened = openBackend(choice, why);
    if (!opened) {
      std::cerr << opened.error().describe() << "\n";
      std::exit(1);
    }
    std::cerr << "backend: " << why << "\n";
    return std::move(opened.value());
  }();
  return *instance;
}

std::shared_ptr<const Snapshot> bootGuest(const std::string& name, uint64_t memory_mib) {
  VmConfig config;
  config.memory_size = memory_mib * kMiB;
  auto image = GuestImage::parse(sandpool::testing::readGuest(name), config);
  if (!image) {
    std::cerr << image.error().describe() << "\n";
    std::exit(1);
  }
  auto snapshot = Snapshot::boot(backend(), *image, config);
  if (!snapshot) {
    std::cerr << snapshot.error().describe() << "\n";
    std::exit(1);
  }
  return snapshot.value();
}

std::unique_ptr<Sandbox> newVm(const std::shared_ptr<const Snapshot>& snapshot) {
  auto sandbox = Sandbox::create(backend(), snapshot);
  if (!sandbox) {
    std::cerr << sandbox.error().describe() << "\n";
    std::exit(1);
  }
  return std::move(sandbox.value());
}

void WarmEmptyCall(benchmark::State& state) {
  auto vm = newVm(bootGuest("echo", 64));
  CallRequest request;
  request.function = "nothing";
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
  auto vm = newVm(bootGuest("counter", static_cast<uint64_t>(state.range(1))));
  CallRequest request;
  request.function = "touch_pages";
  request.args = {pages};
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
  for (auto _ : state) benchmark::DoNotOptimize(newVm(snapshot));
}
BENCHMARK(NewVmFromSnapshot)->Unit(benchmark::kMillisecond)->Repetitions(3)->ReportAggregatesOnly(true);

}  // namespace

BENCHMARK_MAIN();
