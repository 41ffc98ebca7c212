#include "bench_setup.h"

#include <cstdlib>
#include <fstream>
#include <iostream>

#include "guest_files.h"
#include "vm/guest_image.h"
#include "vm/sandbox.h"

namespace sandpool::bench {

vm::Backend& benchBackend() {
  static std::unique_ptr<vm::Backend> instance = [] {
    const char* env = std::getenv("SANDPOOL_BENCH_BACKEND");
    vm::BackendChoice choice = vm::BackendChoice::kEmulated;
    if (env && !vm::parseBackendChoice(env, choice)) {
      std::cerr << "unknown SANDPOOL_BENCH_BACKEND '" << env << "'\n";
      std::exit(2);
    }
    std::string why;
    auto opened = orExit(vm::openBackend(choice, why, vm::KvmOptions::fromEnvironment()));
    std::cerr << "backend: " << why << "\n";
    return opened;
  }();
  return *instance;
}

std::shared_ptr<const vm::Snapshot> bootBenchGuest(vm::Backend& backend, const std::string& name,
                                                   const vm::VmConfig& config) {
  auto image = orExit(vm::GuestImage::parse(sandpool::testing::readGuest(name), config));
  return orExit(vm::Snapshot::boot(backend, image, config));
}

std::shared_ptr<const vm::Snapshot> bootBenchGuest(const std::string& name,
                                                   const vm::VmConfig& config) {
  return bootBenchGuest(benchBackend(), name, config);
}

std::unique_ptr<vm::Sandbox> newBenchVm(vm::Backend& backend,
                                        const std::shared_ptr<const vm::Snapshot>& snapshot) {
  return orExit(vm::Sandbox::create(backend, snapshot));
}

std::unique_ptr<vm::Sandbox> newBenchVm(const std::shared_ptr<const vm::Snapshot>& snapshot) {
  return newBenchVm(benchBackend(), snapshot);
}

long privateKib() {
  std::ifstream in("/proc/self/smaps_rollup");
  std::string key;
  std::getline(in, key);  // the "[rollup]" range line
  long value = 0, total = 0;
  std::string unit;
  while (in >> key >> value >> unit) {
    if (key == "Private_Clean:" || key == "Private_Dirty:") total += value;
  }
  return total;
}

}  // namespace sandpool::bench
