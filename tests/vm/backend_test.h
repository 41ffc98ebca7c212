// What every test run once per backend starts from: the backend its
// parameter names (a backend this host cannot open is skipped with the
// reason; the KVM run inside QEMU covers kvm where the host has no
// /dev/kvm), and calls with a deadline far beyond any plausible run time,
// KVM inside QEMU on a loaded machine included.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "vm/backend.h"
#include "vm/host_functions.h"
#include "vm/sandbox.h"

namespace sandpool::testing {

inline constexpr std::chrono::seconds kGenerousDeadline{120};

// One call of `function`, its deadline `timeout` from now.
inline vm::CallResult callGuest(vm::Sandbox& sandbox, std::string function,
                                std::vector<vm::Value> args = {},
                                std::chrono::nanoseconds timeout = kGenerousDeadline,
                                vm::HostFunctions* host = nullptr) {
  vm::CallRequest request;
  request.function = std::move(function);
  request.args = std::move(args);
  request.startTimeout(timeout);
  request.host_functions = host;
  return sandbox.call(request);
}

class BackendTest : public ::testing::TestWithParam<vm::BackendKind> {
 protected:
  void SetUp() override {
    auto opened = openBackendOfThisKind();
    if (!opened) GTEST_SKIP() << "kvm backend unavailable here: " << opened.error().message;
    backend_ = std::move(opened.value());
  }

  // A backend of the kind the parameter names (another one than backend_,
  // for tests of what backends share or not).
  vm::Expected<std::unique_ptr<vm::Backend>> openBackendOfThisKind() const {
    if (GetParam() == vm::BackendKind::kEmulated) return vm::makeEmulatedBackend();
    return vm::makeKvmBackend(vm::KvmOptions::fromEnvironment());
  }

  static vm::CallResult call(vm::Sandbox& sandbox, std::string function,
                             std::vector<vm::Value> args = {},
                             std::chrono::nanoseconds timeout = kGenerousDeadline,
                             vm::HostFunctions* host = nullptr) {
    return callGuest(sandbox, std::move(function), std::move(args), timeout, host);
  }

  static vm::Value ok(const vm::CallResult& result) {
    EXPECT_TRUE(result.result.ok()) << result.result.error().describe();
    return result.result ? result.result.value() : vm::Value{};
  }

  std::unique_ptr<vm::Backend> backend_;
};

inline std::string backendName(const ::testing::TestParamInfo<vm::BackendKind>& info) {
  return std::string(vm::backendKindName(info.param));
}

}  // namespace sandpool::testing
