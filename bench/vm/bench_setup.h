// What every VM benchmark does before it measures: open the backend named by
// SANDPOOL_BENCH_BACKEND (auto|kvm|emulated; default emulated, so that figures
// name their backend) and boot a guest. Both exit the program with a message
// on failure: a benchmark without its subject has nothing to report.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "vm/backend.h"
#include "vm/sandbox.h"
#include "vm/snapshot.h"

namespace sandpool::bench {

// The process's backend, opened on first use; prints which one and why.
vm::Backend& benchBackend();
// Boots guest `name` (found like the tests find it) with `config`.
std::shared_ptr<const vm::Snapshot> bootBenchGuest(const std::string& name, const vm::VmConfig& config);
// A new VM over `snapshot` on the bench backend.
std::unique_ptr<vm::Sandbox> newBenchVm(const std::shared_ptr<const vm::Snapshot>& snapshot);

}  // namespace sandpool::bench
