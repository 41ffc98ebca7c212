// Counts the system calls the calling thread makes, from the kernel's own
// syscall tracepoints through perf_event_open: every syscall, or only the
// ioctls with one request code (KVM_RUN). Needs tracefs and the right to
// open tracepoint events (root, or perf_event_paranoid -1); where that is
// missing, open() says why and the caller reports the counts as unavailable.
#pragma once

#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>

#include "vm/unique_fd.h"

namespace sandpool::bench {

class SyscallCounter {
 public:
  // Every syscall entered by this thread.
  static std::optional<SyscallCounter> allSyscalls(std::string& why_not) {
    return open("raw_syscalls/sys_enter", nullptr, why_not);
  }
  // ioctl(fd, request, ...) calls of this thread with this request code.
  static std::optional<SyscallCounter> ioctls(unsigned long request, std::string& why_not) {
    const std::string filter = "cmd == " + std::to_string(request);
    return open("syscalls/sys_enter_ioctl", filter.c_str(), why_not);
  }

  // The count so far, less the read() calls that fetched it.
  uint64_t read() {
    uint64_t value = 0;
    if (::read(fd_.get(), &value, sizeof(value)) != sizeof(value)) return 0;
    ++reads_;
    return value - (counts_reads_ ? reads_ : 0);
  }

 private:
  SyscallCounter(vm::UniqueFd fd, bool counts_reads)
      : fd_(std::move(fd)), counts_reads_(counts_reads) {}

  static std::optional<SyscallCounter> open(const char* event, const char* filter,
                                            std::string& why_not) {
    std::string id_text;
    for (const char* root : {"/sys/kernel/tracing/events/", "/sys/kernel/debug/tracing/events/"}) {
      std::ifstream id_file(std::string(root) + event + "/id");
      if (id_file >> id_text) break;
    }
    if (id_text.empty()) {
      why_not = std::string("tracepoint ") + event + " not found (is tracefs mounted?)";
      return std::nullopt;
    }
    perf_event_attr attr{};
    attr.type = PERF_TYPE_TRACEPOINT;
    attr.size = sizeof(attr);
    attr.config = std::stoull(id_text);
    attr.sample_period = 1;
    const int fd = static_cast<int>(::syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
    if (fd < 0) {
      why_not = std::string("perf_event_open(") + event + "): " + std::strerror(errno) +
                " (needs root or kernel.perf_event_paranoid=-1)";
      return std::nullopt;
    }
    vm::UniqueFd owned(fd);
    if (filter != nullptr && ::ioctl(fd, PERF_EVENT_IOC_SET_FILTER, filter) < 0) {
      why_not = std::string("PERF_EVENT_IOC_SET_FILTER '") + filter + "': " + std::strerror(errno);
      return std::nullopt;
    }
    return SyscallCounter(std::move(owned), filter == nullptr);
  }

  vm::UniqueFd fd_;
  bool counts_reads_;  // every read() of the counter is itself a counted syscall
  uint64_t reads_ = 0;
};

}  // namespace sandpool::bench
