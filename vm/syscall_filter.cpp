#include "vm/syscall_filter.h"

#include <linux/kvm.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/prctl.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <string>

#include <fmt/format.h>

namespace sandpool::vm {

namespace {

// Owns a libseccomp filter under construction.
class FilterContext {
 public:
  explicit FilterContext(uint32_t default_action) : ctx_(seccomp_init(default_action)) {}
  ~FilterContext() {
    if (ctx_ != nullptr) seccomp_release(ctx_);
  }
  FilterContext(const FilterContext&) = delete;
  FilterContext& operator=(const FilterContext&) = delete;

  scmp_filter_ctx get() const { return ctx_; }

 private:
  scmp_filter_ctx ctx_;
};

Error filterError(const char* step, int rc) {
  return makeError(ErrorKind::kInternal,
                   fmt::format("system-call filter: {}: {}", step, std::strerror(-rc)));
}

uint32_t actionFor(FilterMode mode) {
  return mode == FilterMode::kKill ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_LOG;
}

Expected<void> addRules(const FilterContext& filter, uint32_t action,
                        std::initializer_list<int> syscalls) {
  for (int nr : syscalls) {
    if (int rc = seccomp_rule_add(filter.get(), action, nr, 0); rc != 0)
      return filterError("add rule", rc);
  }
  return {};
}

Expected<void> load(const FilterContext& filter) {
  if (int rc = seccomp_load(filter.get()); rc != 0) return filterError("load", rc);
  return {};
}

}  // namespace

bool parseFilterMode(std::string_view text, FilterMode& mode) {
  if (text == "kill") {
    mode = FilterMode::kKill;
  } else if (text == "log") {
    mode = FilterMode::kLog;
  } else {
    return false;
  }
  return true;
}

std::string_view filterModeName(FilterMode mode) {
  return mode == FilterMode::kKill ? "kill" : "log";
}

Expected<void> restrictProcess(FilterMode mode) {
  FilterContext filter(SCMP_ACT_ALLOW);
  if (filter.get() == nullptr)
    return makeError(ErrorKind::kInternal, "system-call filter: seccomp_init failed");
  if (int rc = seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_TSYNC, 1); rc != 0) {
    return filterError("synchronise threads", rc);
  }
  const uint32_t action = actionFor(mode);
  // Nothing a server that only runs guests and answers RPC needs: new
  // programs and processes, other processes' memory, the kernel's modules,
  // mounts and namespaces, the clock, the machine's state, and io_uring,
  // whose operations would bypass this filter.
  if (auto added = addRules(filter, action,
                            {SCMP_SYS(execve),
                             SCMP_SYS(execveat),
                             SCMP_SYS(fork),
                             SCMP_SYS(vfork),
                             SCMP_SYS(ptrace),
                             SCMP_SYS(process_vm_readv),
                             SCMP_SYS(process_vm_writev),
                             SCMP_SYS(pidfd_getfd),
                             SCMP_SYS(init_module),
                             SCMP_SYS(finit_module),
                             SCMP_SYS(delete_module),
                             SCMP_SYS(kexec_load),
                             SCMP_SYS(kexec_file_load),
                             SCMP_SYS(mount),
                             SCMP_SYS(umount2),
                             SCMP_SYS(pivot_root),
                             SCMP_SYS(chroot),
                             SCMP_SYS(setns),
                             SCMP_SYS(unshare),
                             SCMP_SYS(open_tree),
                             SCMP_SYS(move_mount),
                             SCMP_SYS(fsopen),
                             SCMP_SYS(fsmount),
                             SCMP_SYS(bpf),
                             SCMP_SYS(perf_event_open),
                             SCMP_SYS(userfaultfd),
                             SCMP_SYS(keyctl),
                             SCMP_SYS(add_key),
                             SCMP_SYS(request_key),
                             SCMP_SYS(reboot),
                             SCMP_SYS(swapon),
                             SCMP_SYS(swapoff),
                             SCMP_SYS(acct),
                             SCMP_SYS(settimeofday),
                             SCMP_SYS(clock_settime),
                             SCMP_SYS(clock_adjtime),
                             SCMP_SYS(adjtimex),
                             SCMP_SYS(sethostname),
                             SCMP_SYS(setdomainname),
                             SCMP_SYS(iopl),
                             SCMP_SYS(ioperm),
                             SCMP_SYS(syslog),
                             SCMP_SYS(quotactl),
                             SCMP_SYS(mknod),
                             SCMP_SYS(mknodat),
                             SCMP_SYS(open_by_handle_at),
                             SCMP_SYS(name_to_handle_at),
                             SCMP_SYS(personality),
                             SCMP_SYS(io_uring_setup),
                             SCMP_SYS(io_uring_enter),
                             SCMP_SYS(io_uring_register)});
      !added) {
    return added;
  }
  // Threads, yes; processes, no. clone3 passes its flags in memory, which
  // a filter cannot read: it fails with ENOSYS, and glibc then creates
  // threads with clone, whose flags the filter sees.
  if (int rc = seccomp_rule_add(filter.get(), action, SCMP_SYS(clone), 1,
                                SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
      rc != 0) {
    return filterError("add clone rule", rc);
  }
  if (int rc = seccomp_rule_add(filter.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
      rc != 0) {
    return filterError("add clone3 rule", rc);
  }
  return load(filter);
}

Expected<void> restrictGuestThread(BackendKind backend, FilterMode mode) {
  FilterContext filter(actionFor(mode));
  if (filter.get() == nullptr)
    return makeError(ErrorKind::kInternal, "system-call filter: seccomp_init failed");
  // What a worker does besides running guests: wait for and hand over
  // work (futex, sched_yield, the eventfd write that wakes the RPC thread),
  // create and reset VMs (memory mappings, memfds, the emulator's code
  // buffer), fresh entropy per call, log lines, end the thread, take the
  // watchdog's signal (KVM) and glibc's set-id broadcast when the server
  // drops its privileges after the workers started.
  if (auto added = addRules(filter, SCMP_ACT_ALLOW,
                            {SCMP_SYS(futex),
                             SCMP_SYS(sched_yield),
                             SCMP_SYS(read),
                             SCMP_SYS(write),
                             SCMP_SYS(writev),
                             SCMP_SYS(mmap),
                             SCMP_SYS(munmap),
                             SCMP_SYS(mremap),
                             SCMP_SYS(mprotect),
                             SCMP_SYS(madvise),
                             SCMP_SYS(brk),
                             SCMP_SYS(memfd_create),
                             SCMP_SYS(ftruncate),
                             SCMP_SYS(fallocate),
                             SCMP_SYS(close),
                             SCMP_SYS(fstat),
                             SCMP_SYS(newfstatat),
                             SCMP_SYS(lseek),
                             SCMP_SYS(pread64),
                             SCMP_SYS(getrandom),
                             SCMP_SYS(clock_gettime),
                             SCMP_SYS(clock_nanosleep),
                             SCMP_SYS(nanosleep),
                             SCMP_SYS(gettid),
                             SCMP_SYS(getpid),
                             SCMP_SYS(tgkill),
                             SCMP_SYS(rt_sigreturn),
                             SCMP_SYS(rt_sigprocmask),
                             SCMP_SYS(rt_sigaction),
                             SCMP_SYS(sigaltstack),
                             SCMP_SYS(set_robust_list),
                             SCMP_SYS(rseq),
                             SCMP_SYS(exit),
                             SCMP_SYS(sched_getaffinity),
                             SCMP_SYS(setuid),
                             SCMP_SYS(setgid),
                             SCMP_SYS(setresuid),
                             SCMP_SYS(setresgid),
                             SCMP_SYS(setgroups)});
      !added) {
    return added;
  }
  // No files: opening one fails instead of killing, because glibc's
  // allocator, on the first heap it trims, reads a /proc setting and takes
  // a failure as "do not trim".
  if (int rc = seccomp_rule_add(filter.get(), SCMP_ACT_ERRNO(EACCES), SCMP_SYS(openat), 0);
      rc != 0) {
    return filterError("add openat rule", rc);
  }
  // Thread names only (PR_SET_NAME).
  if (int rc = seccomp_rule_add(filter.get(), SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
                                SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME));
      rc != 0) {
    return filterError("add prctl rule", rc);
  }
  if (backend == BackendKind::kKvm) {
    // KVM's own ioctls (type KVMIO): KVM_RUN and the register, memory and
    // dirty-log calls of a call, a reset and a cold start.
    if (int rc = seccomp_rule_add(filter.get(), SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xff00, KVMIO << 8));
        rc != 0) {
      return filterError("add ioctl rule", rc);
    }
    if (auto added = addRules(filter, SCMP_ACT_ALLOW, {SCMP_SYS(eventfd2)}); !added) return added;
  }
  return load(filter);
}

}  // namespace sandpool::vm
