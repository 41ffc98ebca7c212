// Identity-mapped 4-level page tables for a guest, built by the host in the
// host area of guest memory (SANDPOOL_HOST_AREA_START..END), which no region
// maps, so the guest cannot reach them through its own addresses.
//
// Each guest page gets the access of the MemoryLayout region holding it:
// read-only and read-write pages are no-execute, code pages are read-only,
// pages outside every region are not present. A 2 MiB range whose pages all
// share one access is one large page; other ranges get a 4 KiB page table.
// Accessed and dirty bits are preset so the CPU never writes the tables, which
// would dirty them on every call.
#pragma once

#include <cstdint>
#include <span>

#include "vm/error.h"
#include "vm/layout.h"

namespace sandpool::vm::kvm {

// Where the PML4 lives: the value for CR3.
inline constexpr uint64_t kPml4Address = 0x2000;

struct PageTableStats {
  uint64_t table_pages = 0;  // PML4 + PDPT + PDs + PTs
  uint64_t large_pages = 0;  // 2 MiB mappings
  uint64_t small_pages = 0;  // 4 KiB mappings
};

// Writes the tables into `image` (the whole guest memory). Refuses layouts
// whose regions are writable and executable, overlap the host area, or need
// more tables than the host area holds.
Expected<PageTableStats> buildPageTables(std::span<uint8_t> image, const MemoryLayout& layout);

}  // namespace sandpool::vm::kvm
