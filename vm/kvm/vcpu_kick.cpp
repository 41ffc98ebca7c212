#include "vm/kvm/vcpu_kick.h"

#include <fmt/format.h>
#include <signal.h>

#include <cerrno>
#include <mutex>

#include "vm/kvm/kvm_ioctl.h"

namespace sandpool::vm::kvm {
namespace {

void onKick(int) {}

}  // namespace

Expected<int> installKickSignal() {
  static std::once_flag once;
  static Expected<int> installed = makeError(ErrorKind::kInternal, "kick signal: not installed");
  std::call_once(once, [] {
    const int signal = SIGRTMIN + 5;
    struct sigaction current {};
    if (::sigaction(signal, nullptr, &current) < 0) {
      installed = makeError(ErrorKind::kInternal,
                            fmt::format("sigaction({}) query: {}", signal, errnoText(errno)));
      return;
    }
    if ((current.sa_flags & SA_SIGINFO) || current.sa_handler != SIG_DFL) {
      installed = makeError(ErrorKind::kInternal,
                            fmt::format("signal {} (SIGRTMIN+5), which the KVM backend uses to "
                                        "stop vCPUs, already has a handler",
                                        signal));
      return;
    }
    struct sigaction action {};
    action.sa_handler = onKick;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (::sigaction(signal, &action, nullptr) < 0) {
      installed = makeError(ErrorKind::kInternal,
                            fmt::format("sigaction({}) install: {}", signal, errnoText(errno)));
      return;
    }
    installed = signal;
  });
  if (!installed) return installed.error();
  return *installed;
}

void unblockKickSignalInThisThread(int signal) {
  thread_local bool unblocked = false;
  if (unblocked) return;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, signal);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  unblocked = true;
}

}  // namespace sandpool::vm::kvm
