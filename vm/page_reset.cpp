#include "vm/page_reset.h"

#include <utility>

namespace sandpool::vm {

PageReset::PageReset(GuestMemory& memory, std::span<const uint8_t> snapshot_contents, Policy policy)
    : memory_(memory),
      snapshot_(snapshot_contents),
      policy_(policy),
      restore_(memory.pageCount()),
      copied_(memory.pageCount()) {}

Expected<ResetStats> PageReset::restore(DirtyPages& guest_dirty) {
  restore_.clear();
  for (uint32_t page : copied_.pages()) restore_.add(page);
  for (uint32_t page : guest_dirty.pages()) restore_.add(page);
  for (uint32_t page : memory_.hostDirty().pages()) restore_.add(page);
  guest_dirty.clear();
  memory_.clearHostDirty();
  copied_.clear();

  ResetStats stats{restore_.size()};
  if (restore_.size() <= policy_.copy_limit) {
    // Few pages: copy the snapshot over them and keep them writable; the
    // next call that writes them takes no fault.
    memory_.copyPagesFrom(snapshot_, restore_.pages());
    if (!policy_.sees_writes_to_copied_pages) std::swap(copied_, restore_);
    restore_.clear();
  } else if (auto discarded = memory_.discardPages(restore_.pages()); !discarded) {
    return discarded.takeError();
  }
  return stats;
}

}  // namespace sandpool::vm
