// How much private memory does an idle warm VM cost beyond the snapshot it
// shares? Boots one guest, creates N VMs over its snapshot, runs one call on
// each (so each is warm: code translated, buffers touched, reset done), and
// reads the process's private memory from /proc/self/smaps_rollup before and
// after, and the mappings and open files they add (the process-wide limits,
// vm/host_limits.h). Prints a table; backend from SANDPOOL_BENCH_BACKEND (default
// emulated).
//
//   vm_memory [N]      (default 32)
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "bench_setup.h"
#include "vm/host_limits.h"
#include "vm/sandbox.h"
#include "vm/snapshot.h"

using namespace sandpool::vm;
using sandpool::bench::privateKib;

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 32;
  VmConfig config;
  auto snapshot = sandpool::bench::bootBenchGuest("echo", config);
  CallRequest request;
  request.function = "echo";
  request.args = {std::string("warm")};
  request.startTimeout(sandpool::bench::kBenchCallTimeout);
  // One VM first, so that one-time costs (the emulator's global state, the
  // watchdog thread) do not count against the per-VM figure.
  auto first = sandpool::bench::newBenchVm(snapshot);
  first->call(request);

  const auto usage_before = sandpool::bench::orExit(readHostUsage());
  const long before = privateKib();
  std::vector<std::unique_ptr<Sandbox>> vms;
  for (int i = 0; i < count; i++) {
    vms.push_back(sandpool::bench::newBenchVm(snapshot));
  }
  const long created = privateKib();
  uint64_t private_pages = 0;
  for (auto& vm : vms) {
    CallResult result = vm->call(request);
    if (!result.result) {
      std::cerr << result.result.error().describe() << "\n";
      return 1;
    }
    private_pages += result.stats.pages_restored;
  }
  const long after = privateKib();
  const auto usage_after = sandpool::bench::orExit(readHostUsage());
  std::printf("backend               %s\n",
              std::string(backendKindName(sandpool::bench::benchBackend().kind())).c_str());
  std::printf("guest memory          %llu MiB\n",
              static_cast<unsigned long long>(config.memory_size / kMiB));
  std::printf("snapshot resident     %llu KiB (shared by all VMs)\n",
              static_cast<unsigned long long>(snapshot->residentPages() * kPageSize / 1024));
  std::printf("warm idle VMs         %d\n", count);
  std::printf("private memory added  %ld KiB\n", after - before);
  std::printf("per VM                %.1f KiB\n", static_cast<double>(after - before) / count);
  std::printf("  of which at create  %.1f KiB (vCPU / emulator engine, dirty-page sets)\n",
              static_cast<double>(created - before) / count);
  std::printf("  of which first call %.1f KiB (translated code, TLB, guest pages kept: %.1f KiB)\n",
              static_cast<double>(after - created) / count,
              static_cast<double>(private_pages * kPageSize / 1024) / count);
  std::printf("mappings per VM       %.1f (%llu of vm.max_map_count %llu in use)\n",
              static_cast<double>(usage_after.mappings - usage_before.mappings) / count,
              static_cast<unsigned long long>(usage_after.mappings),
              static_cast<unsigned long long>(usage_after.mapping_limit));
  std::printf("open files per VM     %.2f (%llu of RLIMIT_NOFILE %llu in use)\n",
              static_cast<double>(usage_after.files - usage_before.files) / count,
              static_cast<unsigned long long>(usage_after.files),
              static_cast<unsigned long long>(usage_after.file_limit));
  return 0;
}
