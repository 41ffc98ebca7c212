// Proves a /dev/kvm can run sandpool guests before the backend is offered.
// Not every /dev/kvm can: a paravirtual KVM such as kvm-pvm accepts the same
// ioctls but cannot execute ordinary ring-0 guest code (its instruction
// emulator stops on SSE accesses to write-protected pages), so without this
// check `--backend=auto` would pick a KVM on which every guest fails.
#pragma once

#include "vm/backend.h"

namespace sandpool::vm::kvm {

// Boots a few instructions in a throw-away micro-VM: long mode through the
// backend's own page tables, an `out`, SSE loads and stores to a dirty-logged
// page, a reset, and the same again: one small VM, created and dropped.
Expected<void> runSelfTest(Backend& backend);

}  // namespace sandpool::vm::kvm
