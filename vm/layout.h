// The guest memory layout: one place that says where everything is. Both
// backends and the boot code ask it; the guest learns it from the boot info.
//
//   0x0000            page 0, never mapped
//   0x1000            boot info (read-only)
//   0x2000..0x100000  host area (page tables on KVM), never mapped for the guest
//   0x400000..        ELF segments (code R+X, read-only data R, data R+W+NX)
//   ..                input, output and host-call buffers (R+W+NX)
//   ..                heap (R+W+NX)
//   ..                guard page (unmapped)
//   ..memory_size     stack (R+W+NX)
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "vm/config.h"
#include "vm/error.h"
#include "vm/guest_image.h"

namespace sandpool::vm {

inline constexpr uint64_t kPageSize = 4096;

struct Region {
  uint64_t start = 0;  // page aligned
  uint64_t size = 0;   // page multiple
  uint8_t access = kAccessNone;
  std::string_view name;

  uint64_t end() const { return start + size; }
};

struct MemoryLayout {
  uint64_t memory_size = 0;
  uint64_t boot_info_addr = 0;
  uint64_t input_addr = 0, input_size = 0;
  uint64_t output_addr = 0, output_size = 0;
  uint64_t host_call_addr = 0, host_call_size = 0;
  uint64_t heap_start = 0, heap_end = 0;
  uint64_t guard_addr = 0;  // one unmapped page under the stack
  uint64_t stack_top = 0;
  // Every guest-visible range, sorted and disjoint; the rest is unmapped.
  std::vector<Region> regions;

  uint64_t pageCount() const { return memory_size / kPageSize; }
  // The region holding `addr`, or nullptr where the guest has no mapping.
  const Region* regionAt(uint64_t addr) const;
  // What is at `addr`, for error messages: a region's name, or "page 0",
  // "the host area", "the guard page", "an unmapped gap", "past guest memory".
  std::string_view describe(uint64_t addr) const;
};

Expected<MemoryLayout> computeLayout(const GuestImage& image, const VmConfig& config);

}  // namespace sandpool::vm
