// Host functions that hold a call inside the host until the test releases
// it: a worker (or a thread) kept busy exactly as long as a test needs, so
// that what happens meanwhile is ordered by the test, not by timing. Used with
// the probe guest's call_host export.
#pragma once

#include <semaphore>
#include <span>
#include <string_view>

#include "vm/host_functions.h"

namespace sandpool::testing {

class HoldingHostFunctions final : public vm::HostFunctions {
 public:
  vm::Expected<vm::Value> callHostFunction(std::string_view, std::span<const vm::Value>) override {
    entered_.release();
    released_.acquire();
    return vm::Value(std::string("released"));
  }
  // Returns once the call is inside the host function (its deadline is
  // registered with the watchdog by then).
  void waitUntilEntered() { entered_.acquire(); }
  void release() { released_.release(); }

 private:
  std::binary_semaphore entered_{0};
  std::binary_semaphore released_{0};
};

}  // namespace sandpool::testing
