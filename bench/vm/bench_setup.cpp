#include "bench_setup.h"

#include <cstdlib>
#include <iostream>

#include "guest_files.h"
#include "vm/guest_image.h"
#include "vm/sandbox.h"

namespace sandpool::bench {

namespace {

template <typename T>
T orExit(vm::Expected<T> result) {
  if (!result) {
    std::cerr << result.error().describe() << "\n";
    std::exit(1);
  }
  return std::move(result.value());
}

}  // namespace

vm::Backend& benchBackend() {
  static std::unique_ptr<vm::Backend> instance = [] {
    const char* env = std::getenv("SANDPOOL_BENCH_BACKEND");
    vm::BackendChoice choice = vm::BackendChoice::kEmulated;
    if (env && !vm::parseBackendChoice(env, choice)) {
      std::cerr << "unknown SANDPOOL_BENCH_BACKEND '" << env << "'\n";
      std::exit(2);
    }
    std::string why;
    auto opened = orExit(vm::openBackend(choice, why));
    std::cerr << "backend: " << why << "\n";
    return opened;
  }();
  return *instance;
}

std::shared_ptr<const vm::Snapshot> bootBenchGuest(const std::string& name, const vm::VmConfig& config) {
  auto image = orExit(vm::GuestImage::parse(sandpool::testing::readGuest(name), config));
  return orExit(vm::Snapshot::boot(benchBackend(), image, config));
}

std::unique_ptr<vm::Sandbox> newBenchVm(const std::shared_ptr<const vm::Snapshot>& snapshot) {
  return orExit(vm::Sandbox::create(benchBackend(), snapshot));
}

}  // namespace sandpool::bench
