#include "vm/backend.h"

#include <cstdlib>

#include <fmt/format.h>

namespace sandpool::vm {

std::string_view backendKindName(BackendKind kind) {
  return kind == BackendKind::kKvm ? "kvm" : "emulated";
}

bool parseBackendChoice(std::string_view text, BackendChoice& choice) {
  if (text == "auto")
    choice = BackendChoice::kAuto;
  else if (text == "kvm")
    choice = BackendChoice::kKvm;
  else if (text == "emulated")
    choice = BackendChoice::kEmulated;
  else
    return false;
  return true;
}

bool parseKvmSpeedCheck(std::string_view text, KvmOptions& options) {
  if (text != "require" && text != "waive") return false;
  options.waive_speed_check = text == "waive";
  return true;
}

KvmOptions KvmOptions::fromEnvironment() {
  const char* speed_check = std::getenv("SANDPOOL_KVM_SPEED_CHECK");
  KvmOptions options;
  if (speed_check != nullptr) parseKvmSpeedCheck(speed_check, options);
  return options;
}

Expected<std::unique_ptr<Backend>> openBackend(BackendChoice choice, std::string& chosen_because,
                                               const KvmOptions& kvm_options) {
  switch (choice) {
    case BackendChoice::kEmulated:
      chosen_because = "emulated backend: requested";
      return makeEmulatedBackend();
    case BackendChoice::kKvm: {
      auto kvm = makeKvmBackend(kvm_options);
      if (kvm)
        chosen_because = fmt::format("kvm backend: requested; {}", kvm.value()->openingReport());
      return kvm;
    }
    case BackendChoice::kAuto: {
      auto kvm = makeKvmBackend(kvm_options);
      if (kvm) {
        chosen_because =
            fmt::format("kvm backend: /dev/kvm opened (auto); {}", kvm.value()->openingReport());
        return kvm;
      }
      chosen_because =
          fmt::format("emulated backend: KVM unavailable ({}) (auto)", kvm.error().message);
      return makeEmulatedBackend();
    }
  }
  return makeError(ErrorKind::kBackendUnavailable, "unknown backend choice");
}

}  // namespace sandpool::vm
