// Kicking a vCPU thread out of KVM_RUN: a real-time signal with a handler
// that does nothing. Its delivery is what makes KVM_RUN return EINTR; the
// handler itself has no work. SA_RESTART keeps the signal from failing other
// system calls of the thread it lands on (KVM_RUN's EINTR is never restarted).
#pragma once

#include <pthread.h>

#include "vm/error.h"

namespace sandpool::vm::kvm {

// The signal used (SIGRTMIN + 5). Installs the handler once per process;
// fails if some other part of the process already handles that signal.
Expected<int> installKickSignal();

// Unblocks the kick signal in the calling thread, once per thread.
void unblockKickSignalInThisThread(int signal);

}  // namespace sandpool::vm::kvm
