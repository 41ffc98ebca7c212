#include "vm/layout.h"

#include <sandpool/abi.h>

#include <algorithm>
#include <string>

#include <fmt/format.h>

namespace sandpool::vm {

namespace {

uint64_t pageUp(uint64_t v) { return (v + kPageSize - 1) & ~(kPageSize - 1); }

Error layoutError(const std::string& what) { return makeError(ErrorKind::kInvalidGuest, what); }

}  // namespace

const Region* MemoryLayout::regionAt(uint64_t addr) const {
  auto it = std::upper_bound(regions.begin(), regions.end(), addr,
                             [](uint64_t a, const Region& r) { return a < r.start; });
  if (it == regions.begin()) return nullptr;
  --it;
  return addr < it->end() ? &*it : nullptr;
}

std::string_view MemoryLayout::describe(uint64_t addr) const {
  if (const Region* region = regionAt(addr)) return region->name;
  if (addr >= memory_size) return "past guest memory";
  if (addr < kPageSize) return "page 0";
  if (addr >= SANDPOOL_HOST_AREA_START && addr < SANDPOOL_HOST_AREA_END) return "the host area";
  if (addr >= guard_addr && addr < guard_addr + kPageSize) return "the guard page";
  return "an unmapped gap";
}

Expected<MemoryLayout> computeLayout(const GuestImage& image, const VmConfig& config) {
  constexpr uint64_t k2MiB = 2 * kMiB;
  if (config.memory_size < 4 * kMiB || config.memory_size % k2MiB != 0 ||
      config.memory_size > 64ull * 1024 * kMiB) {
    return layoutError(
        fmt::format("guest memory size {} must be a multiple of 2 MiB between 4 MiB and 64 GiB",
                    config.memory_size));
  }
  MemoryLayout layout;
  layout.memory_size = config.memory_size;
  layout.boot_info_addr = SANDPOOL_BOOT_INFO_ADDR;
  layout.regions.push_back({SANDPOOL_BOOT_INFO_ADDR, kPageSize, kAccessRead, "boot info"});
  for (const ImageSegment& s : image.segments()) {
    layout.regions.push_back({s.vaddr, s.mem_size, s.access, "image"});
  }

  uint64_t next = pageUp(image.end());
  auto place = [&](uint64_t size, const char* name, uint64_t& addr) {
    addr = next;
    layout.regions.push_back({next, pageUp(size), kAccessRead | kAccessWrite, name});
    next += pageUp(size);
  };
  place(config.input_size, "input buffer", layout.input_addr);
  place(config.output_size, "output buffer", layout.output_addr);
  place(config.host_call_size, "host-call buffer", layout.host_call_addr);
  layout.input_size = pageUp(config.input_size);
  layout.output_size = pageUp(config.output_size);
  layout.host_call_size = pageUp(config.host_call_size);

  const uint64_t stack_size = pageUp(config.stack_size);
  const uint64_t heap_start = next;
  // Heap, guard page, stack: the rest of memory, with at least a page of heap.
  if (heap_start + kPageSize + kPageSize + stack_size > config.memory_size) {
    return layoutError(fmt::format(
        "guest image and buffers ({} KiB) plus stack ({} KiB) do not fit guest memory ({} MiB)",
        heap_start / 1024, stack_size / 1024, config.memory_size / kMiB));
  }
  layout.stack_top = config.memory_size;
  layout.guard_addr = config.memory_size - stack_size - kPageSize;
  layout.heap_start = heap_start;
  layout.heap_end = layout.guard_addr;
  layout.regions.push_back(
      {heap_start, layout.heap_end - heap_start, kAccessRead | kAccessWrite, "heap"});
  layout.regions.push_back(
      {config.memory_size - stack_size, stack_size, kAccessRead | kAccessWrite, "stack"});
  std::sort(layout.regions.begin(), layout.regions.end(),
            [](const Region& a, const Region& b) { return a.start < b.start; });
  return layout;
}

}  // namespace sandpool::vm
