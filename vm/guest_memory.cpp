#include "vm/guest_memory.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "vm/layout.h"

namespace sandpool::vm {

GuestMemory::GuestMemory(Mapping mapping, uint64_t page_count)
    : mapping_(std::move(mapping)), host_dirty_(page_count) {}

Expected<GuestMemory> GuestMemory::mapPrivate(int memfd, uint64_t size, int prot) {
  auto mapping = Mapping::map(size, prot, MAP_PRIVATE | MAP_NORESERVE, memfd, "guest memory");
  if (!mapping) return mapping.takeError();
  return GuestMemory(std::move(mapping.value()), size / kPageSize);
}

Expected<GuestMemory> GuestMemory::mapShared(int memfd, uint64_t size) {
  auto mapping =
      Mapping::map(size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, memfd, "boot memory");
  if (!mapping) return mapping.takeError();
  return GuestMemory(std::move(mapping.value()), size / kPageSize);
}

uint64_t GuestMemory::pageCount() const { return size() / kPageSize; }

Expected<std::span<const uint8_t>> GuestMemory::view(uint64_t addr, uint64_t len,
                                                     std::string_view what) const {
  if (addr > size() || len > size() - addr) {
    return makeError(ErrorKind::kBadHostCall,
                     fmt::format("{}: [{}, +{}) is outside guest memory ({} MiB)", what,
                                 toHex(addr), len, size() / kMiB));
  }
  return std::span<const uint8_t>(mapping_.data() + addr, len);
}

Expected<void> GuestMemory::read(uint64_t addr, std::span<uint8_t> out,
                                 std::string_view what) const {
  auto source = view(addr, out.size(), what);
  if (!source) return source.takeError();
  std::memcpy(out.data(), source->data(), out.size());
  return {};
}

Expected<void> GuestMemory::write(uint64_t addr, std::span<const uint8_t> data,
                                  std::string_view what) {
  auto target = view(addr, data.size(), what);
  if (!target) return target.takeError();
  if (data.empty()) return {};
  for (uint64_t page = addr / kPageSize; page <= (addr + data.size() - 1) / kPageSize; page++) {
    host_dirty_.add(page);
  }
  std::memcpy(mapping_.data() + addr, data.data(), data.size());
  return {};
}

void GuestMemory::copyPagesFrom(std::span<const uint8_t> snapshot,
                                std::span<const uint32_t> pages) {
  for (uint32_t page : pages) {
    const uint64_t offset = uint64_t{page} * kPageSize;
    std::memcpy(mapping_.data() + offset, snapshot.data() + offset, kPageSize);
  }
}

Expected<void> GuestMemory::discardPages(std::span<const uint32_t> pages) {
  // Adjacent pages go to the kernel as one range.
  size_t i = 0;
  while (i < pages.size()) {
    size_t run = 1;
    while (i + run < pages.size() && pages[i + run] == pages[i] + run) run++;
    if (::madvise(mapping_.data() + uint64_t{pages[i]} * kPageSize, run * kPageSize,
                  MADV_DONTNEED) != 0) {
      return makeError(ErrorKind::kResetFailed,
                       fmt::format("madvise(MADV_DONTNEED) of guest page {}: {}", pages[i],
                                   std::strerror(errno)));
    }
    i += run;
  }
  return {};
}

}  // namespace sandpool::vm
