#include "vm/kvm/page_tables.h"

#include <fmt/format.h>

#include <cstring>
#include <vector>

#include "sandpool/abi.h"
#include "vm/x86.h"

namespace sandpool::vm::kvm {
namespace {

constexpr uint64_t kPagesPerLargePage = x86::kLargePage / x86::kSmallPage;
constexpr uint64_t kMaxMemory = 512ull << 30;  // what one PDPT maps

// Leaf entry bits for one access; x86 cannot express write-only or
// execute-only, so those read as read-write and read-execute.
uint64_t leafBits(uint8_t access) {
  uint64_t bits = x86::kPtePresent | x86::kPteUser | x86::kPteAccessed | x86::kPteDirty;
  if (access & kAccessWrite) bits |= x86::kPteWritable;
  if (!(access & kAccessExecute)) bits |= x86::kPteNoExecute;
  return bits;
}

constexpr uint64_t kTableBits =
    x86::kPtePresent | x86::kPteWritable | x86::kPteUser | x86::kPteAccessed;

// Hands out zeroed 4 KiB tables from the host area, in order.
class TableAllocator {
 public:
  explicit TableAllocator(std::span<uint8_t> image) : image_(image) {}

  Expected<uint64_t> allocate(std::string_view what) {
    if (next_ + x86::kSmallPage > SANDPOOL_HOST_AREA_END) {
      return makeError(ErrorKind::kInvalidGuest,
                       fmt::format("page tables: no room for the {} in the host area "
                                   "[{:#x}, {:#x}) after {} tables",
                                   what, SANDPOOL_HOST_AREA_START, SANDPOOL_HOST_AREA_END, count_));
    }
    uint64_t addr = next_;
    std::memset(image_.data() + addr, 0, x86::kSmallPage);
    next_ += x86::kSmallPage;
    ++count_;
    return addr;
  }

  void set(uint64_t table, uint64_t index, uint64_t entry) {
    std::memcpy(image_.data() + table + index * sizeof(uint64_t), &entry, sizeof(entry));
  }

  uint64_t count() const { return count_; }

 private:
  std::span<uint8_t> image_;
  uint64_t next_ = kPml4Address;
  uint64_t count_ = 0;
};

Expected<std::vector<uint8_t>> pageAccess(const MemoryLayout& layout) {
  std::vector<uint8_t> access(layout.memory_size / x86::kSmallPage, kAccessNone);
  for (const Region& region : layout.regions) {
    if (region.start % x86::kSmallPage || region.size % x86::kSmallPage ||
        region.end() > layout.memory_size || region.end() < region.start) {
      return makeError(ErrorKind::kInvalidGuest,
                       fmt::format("page tables: region {} [{:#x}, {:#x}) is not page aligned "
                                   "inside guest memory ({} bytes)",
                                   region.name, region.start, region.end(), layout.memory_size));
    }
    if ((region.access & kAccessWrite) && (region.access & kAccessExecute)) {
      return makeError(ErrorKind::kInvalidGuest,
                       fmt::format("page tables: region {} [{:#x}, {:#x}) is writable and "
                                   "executable; guests get W^X",
                                   region.name, region.start, region.end()));
    }
    if (region.start < SANDPOOL_HOST_AREA_END && region.end() > SANDPOOL_HOST_AREA_START) {
      return makeError(ErrorKind::kInvalidGuest,
                       fmt::format("page tables: region {} [{:#x}, {:#x}) overlaps the host "
                                   "area [{:#x}, {:#x})",
                                   region.name, region.start, region.end(),
                                   SANDPOOL_HOST_AREA_START, SANDPOOL_HOST_AREA_END));
    }
    for (uint64_t page = region.start / x86::kSmallPage; page < region.end() / x86::kSmallPage;
         ++page) {
      access[page] = region.access;
    }
  }
  return access;
}

}  // namespace

Expected<PageTableStats> buildPageTables(std::span<uint8_t> image, const MemoryLayout& layout) {
  if (layout.memory_size == 0 || layout.memory_size % x86::kSmallPage ||
      layout.memory_size > kMaxMemory || image.size() < layout.memory_size ||
      layout.memory_size < SANDPOOL_HOST_AREA_END) {
    return makeError(ErrorKind::kInvalidGuest,
                     fmt::format("page tables: guest memory of {} bytes (image {} bytes) must be "
                                 "page aligned, at least {:#x} and at most 512 GiB",
                                 layout.memory_size, image.size(), SANDPOOL_HOST_AREA_END));
  }
  auto access = pageAccess(layout);
  if (!access) return access.takeError();

  TableAllocator tables(image);
  PageTableStats stats;
  auto pml4 = tables.allocate("PML4");
  auto pdpt = tables.allocate("PDPT");
  if (!pml4) return pml4.takeError();
  if (!pdpt) return pdpt.takeError();
  tables.set(*pml4, 0, *pdpt | kTableBits);

  const uint64_t large_count = (layout.memory_size + x86::kLargePage - 1) / x86::kLargePage;
  uint64_t pd = 0;
  for (uint64_t large = 0; large < large_count; ++large) {
    const uint64_t pd_index = large % x86::kEntriesPerTable;
    if (pd_index == 0) {
      auto table = tables.allocate("page directory");
      if (!table) return table.takeError();
      pd = *table;
      tables.set(*pdpt, large / x86::kEntriesPerTable, pd | kTableBits);
    }
    const uint64_t first = large * kPagesPerLargePage;
    const uint64_t last = std::min<uint64_t>(first + kPagesPerLargePage, access->size());
    bool uniform = last - first == kPagesPerLargePage;
    for (uint64_t page = first + 1; uniform && page < last; ++page) {
      uniform = (*access)[page] == (*access)[first];
    }
    if (uniform) {
      if ((*access)[first] != kAccessNone) {
        tables.set(pd, pd_index,
                   large * x86::kLargePage | leafBits((*access)[first]) | x86::kPteLarge);
        ++stats.large_pages;
      }
      continue;
    }
    auto pt = tables.allocate("page table");
    if (!pt) return pt.takeError();
    tables.set(pd, pd_index, *pt | kTableBits);
    for (uint64_t page = first; page < last; ++page) {
      if ((*access)[page] == kAccessNone) continue;
      tables.set(*pt, page - first, page * x86::kSmallPage | leafBits((*access)[page]));
      ++stats.small_pages;
    }
  }
  stats.table_pages = tables.count();
  return stats;
}

}  // namespace sandpool::vm::kvm
