// What every VM benchmark does before it measures: open the backend named by
// SANDPOOL_BENCH_BACKEND (auto|kvm|emulated; default emulated, so that figures
// name their backend) and boot a guest. Both exit the program with a message
// on failure: a benchmark without its subject has nothing to report.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

#include "vm/backend.h"
#include "vm/sandbox.h"
#include "vm/snapshot.h"

namespace sandpool::bench {

// The value, or the error on stderr and exit status 1.
template <typename T>
T orExit(vm::Expected<T> result) {
  if (!result) {
    std::cerr << result.error().describe() << "\n";
    std::exit(1);
  }
  return std::move(result.value());
}

// The timeout of a benchmark's calls, its deadline set once before the
// timed loop: far beyond any run, so that no call is stopped and no clock
// read is added to the loop.
inline constexpr std::chrono::hours kBenchCallTimeout{1};

// The process's backend, opened on first use; prints which one and why.
vm::Backend& benchBackend();
// Boots guest `name` (found like the tests find it) with `config`, on
// `backend` or the bench backend.
std::shared_ptr<const vm::Snapshot> bootBenchGuest(vm::Backend& backend, const std::string& name,
                                                   const vm::VmConfig& config);
std::shared_ptr<const vm::Snapshot> bootBenchGuest(const std::string& name,
                                                   const vm::VmConfig& config);
// A new VM over `snapshot`, on `backend` or the bench backend.
std::unique_ptr<vm::Sandbox> newBenchVm(vm::Backend& backend,
                                        const std::shared_ptr<const vm::Snapshot>& snapshot);
std::unique_ptr<vm::Sandbox> newBenchVm(const std::shared_ptr<const vm::Snapshot>& snapshot);

// The process's private memory (Private_Clean + Private_Dirty of
// /proc/self/smaps_rollup), in KiB.
long privateKib();

}  // namespace sandpool::bench
