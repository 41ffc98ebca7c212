// The memory half of a reset, written once for both backends: merge the
// pages the guest wrote (as the backend collected them) with the pages the
// host wrote, copy them back from the snapshot or drop the private copies,
// and count them. The backend supplies only what differs: how it learns
// which pages the guest wrote, and, for the pages whose copies were dropped,
// how it starts seeing writes to them again (dropped()).
//
// Thread: owned by one micro-VM; used by the thread that resets it.
#pragma once

#include <cstddef>
#include <span>

#include "vm/backend.h"
#include "vm/dirty_pages.h"
#include "vm/error.h"
#include "vm/guest_memory.h"

namespace sandpool::vm {

class PageReset {
 public:
  struct Policy {
    // Up to this many pages are restored by copy; past it the private copies
    // are dropped and the pages tracked again.
    size_t copy_limit = SIZE_MAX;
    // False where the backend does not see writes to the pages it restored
    // by copy (the emulated backend leaves them writable): those are then
    // restored again on every reset until they are dropped.
    bool sees_writes_to_copied_pages = true;
  };

  PageReset(GuestMemory& memory, std::span<const uint8_t> snapshot_contents, Policy policy);

  // Restores every page in `guest_dirty` (which it clears), every page the
  // host wrote since the last reset, and the pages kept writable by the
  // last one.
  Expected<ResetStats> restore(DirtyPages& guest_dirty);
  // The pages whose private copies the last restore() dropped (none where
  // it copied): the backend tracks writes to them again.
  std::span<const uint32_t> dropped() const { return restore_.pages(); }

  // Forgets the host's writes so far: the reset point is now.
  void startFromHere() { memory_.clearHostDirty(); }

 private:
  GuestMemory& memory_;
  std::span<const uint8_t> snapshot_;
  Policy policy_;
  DirtyPages restore_;  // after restore(): the pages it dropped
  DirtyPages copied_;   // restored by copy last time and not seen since
};

}  // namespace sandpool::vm
