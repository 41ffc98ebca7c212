// System-call filters (seccomp-bpf, built with libseccomp): what a thread
// that escaped its guest (out of the VM, or out of the emulator) may still
// ask of the kernel.
//
// Two filters, stacked where both apply:
//   - the process filter, on every thread of the process (installed with
//     TSYNC, so threads started earlier get it too): everything except
//     creating processes, executing programs, tracing, loading kernel
//     modules, mounting, and the rest of the list in syscall_filter.cpp;
//   - the guest-thread filter, on each thread that runs guests (the pool's
//     workers), installed by the thread itself when it starts: an allow-list
//     of the calls such a thread makes (futex, memory management, the KVM
//     ioctls, a write to wake the RPC thread, ...). A warm call on the
//     emulated backend makes none; on KVM it makes the few of KVM_RUN.
// A call outside a filter kills the whole process (the kernel logs it as a
// seccomp audit event), or, in log mode, is allowed and only logged: for an
// operator tuning the lists on a new kernel or libc.
#pragma once

#include <string_view>

#include "vm/backend.h"
#include "vm/error.h"

namespace sandpool::vm {

enum class FilterMode { kKill, kLog };

// "kill" or "log"; false for anything else.
bool parseFilterMode(std::string_view text, FilterMode& mode);
std::string_view filterModeName(FilterMode mode);

// Every thread of the calling process, now and later. Sets no_new_privs.
Expected<void> restrictProcess(FilterMode mode);

// The calling thread and the threads it starts later. The list depends on
// the backend: only the KVM backend's threads may call ioctl (and only
// KVM's ioctls).
Expected<void> restrictGuestThread(BackendKind backend, FilterMode mode);

}  // namespace sandpool::vm
