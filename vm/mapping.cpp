#include "vm/mapping.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace sandpool::vm {

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

Mapping::~Mapping() {
  if (data_) ::munmap(data_, size_);
}

Expected<Mapping> Mapping::map(size_t size, int prot, int flags, int fd, const char* what) {
  void* p = ::mmap(nullptr, size, prot, flags, fd, 0);
  if (p == MAP_FAILED) {
    return makeError(ErrorKind::kInternal,
                     fmt::format("mmap of {} ({} bytes): {}", what, size, std::strerror(errno)));
  }
  return Mapping(static_cast<uint8_t*>(p), size);
}

}  // namespace sandpool::vm
