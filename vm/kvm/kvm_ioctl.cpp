#include "vm/kvm/kvm_ioctl.h"

#include <fmt/format.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

namespace sandpool::vm::kvm {

std::string errnoText(int err) {
  const char* name = strerrorname_np(err);
  return fmt::format("{} ({})", name ? name : fmt::format("errno {}", err), std::strerror(err));
}

std::vector<uint8_t> cpuid2Buffer(const std::vector<kvm_cpuid_entry2>& entries) {
  std::vector<uint8_t> buffer(kCpuid2HeaderSize + entries.size() * sizeof(kvm_cpuid_entry2));
  const uint32_t count = static_cast<uint32_t>(entries.size());
  std::memcpy(buffer.data(), &count, sizeof(count));
  std::memcpy(buffer.data() + kCpuid2HeaderSize, entries.data(),
              entries.size() * sizeof(kvm_cpuid_entry2));
  return buffer;
}

Expected<int> kvmIoctl(int fd, unsigned long request, unsigned long arg, std::string_view what,
                       ErrorKind kind) {
  int result;
  do {
    result = ::ioctl(fd, request, arg);
  } while (result < 0 && errno == EINTR);
  if (result < 0) return makeError(kind, fmt::format("{}: {}", what, errnoText(errno)));
  return result;
}

}  // namespace sandpool::vm::kvm
