// A set of guest page indices: a bitmap for membership plus a list for
// iteration, so that clearing and walking it cost O(dirty pages), not
// O(guest memory). add() neither allocates nor takes locks, so the emulated
// backend may call it from its SIGSEGV handler.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace sandpool::vm {

class DirtyPages {
 public:
  explicit DirtyPages(uint64_t page_count);

  // Returns true if the page was not in the set yet.
  bool add(uint64_t page) noexcept;
  std::span<const uint32_t> pages() const { return {list_.get(), count_}; }
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  void clear() noexcept;

 private:
  uint64_t page_count_;
  std::unique_ptr<uint64_t[]> bitmap_;
  std::unique_ptr<uint32_t[]> list_;  // capacity page_count_: never reallocates
  size_t count_ = 0;
};

}  // namespace sandpool::vm
