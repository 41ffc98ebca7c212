#include "vm/backend.h"

namespace sandpool::vm {

std::string_view backendKindName(BackendKind kind) {
  return kind == BackendKind::kKvm ? "kvm" : "emulated";
}

bool parseBackendChoice(std::string_view text, BackendChoice& choice) {
  if (text == "auto") choice = BackendChoice::kAuto;
  else if (text == "kvm") choice = BackendChoice::kKvm;
  else if (text == "emulated") choice = BackendChoice::kEmulated;
  else return false;
  return true;
}

Expected<std::unique_ptr<Backend>> openBackend(BackendChoice choice, std::string& chosen_because) {
  switch (choice) {
    case BackendChoice::kEmulated:
      chosen_because = "emulated backend: requested";
      return makeEmulatedBackend();
    case BackendChoice::kKvm: {
      auto kvm = makeKvmBackend();
      if (kvm) chosen_because = "kvm backend: requested";
      return kvm;
    }
    case BackendChoice::kAuto: {
      auto kvm = makeKvmBackend();
      if (kvm) {
        chosen_because = "kvm backend: /dev/kvm opened (auto)";
        return kvm;
      }
      chosen_because = "emulated backend: KVM unavailable (" + kvm.error().message + ") (auto)";
      return makeEmulatedBackend();
    }
  }
  return makeError(ErrorKind::kBackendUnavailable, "unknown backend choice");
}

}  // namespace sandpool::vm
