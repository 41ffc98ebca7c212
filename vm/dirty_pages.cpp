#include "vm/dirty_pages.h"

namespace sandpool::vm {

DirtyPages::DirtyPages(uint64_t page_count)
    : page_count_(page_count),
      bitmap_(new uint64_t[(page_count + 63) / 64]()),
      list_(new uint32_t[page_count]) {}

bool DirtyPages::add(uint64_t page) noexcept {
  if (page >= page_count_) return false;
  uint64_t& word = bitmap_[page / 64];
  const uint64_t bit = uint64_t{1} << (page % 64);
  if (word & bit) return false;
  word |= bit;
  list_[count_++] = static_cast<uint32_t>(page);
  return true;
}

void DirtyPages::clear() noexcept {
  for (size_t i = 0; i < count_; i++) bitmap_[list_[i] / 64] = 0;
  count_ = 0;
}

}  // namespace sandpool::vm
