#include "vm/backend.h"

namespace sandpool::vm {

Expected<std::unique_ptr<Backend>> makeKvmBackend() {
  return makeError(ErrorKind::kBackendUnavailable, "KVM backend: not built yet");
}

}  // namespace sandpool::vm
