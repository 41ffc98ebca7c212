// One VM's view of guest memory: a MAP_PRIVATE mapping of the snapshot's
// sealed memfd. Every VM of a guest maps the same memfd, so they share the
// snapshot's pages and each holds private copies only of the pages it wrote.
//
// The host touches guest memory only through read()/write()/view(), which
// check every offset and length against guest memory; no raw guest pointer
// leaves vm/. Host writes are recorded as dirty so a reset restores them.
// Where the guest names the address or fills the bytes, the host goes
// through GuestView (guest_view.h), which further limits every access to
// the regions the guest itself may use.
//
// Thread: owned by one Sandbox; used by the thread running that Sandbox.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "vm/dirty_pages.h"
#include "vm/error.h"
#include "vm/mapping.h"

namespace sandpool::vm {

class GuestMemory {
 public:
  // Maps `memfd` (of `size` bytes) privately, copy-on-write, with `prot`.
  static Expected<GuestMemory> mapPrivate(int memfd, uint64_t size, int prot);
  // Maps `memfd` shared and writable: the boot VM, whose writes become the
  // snapshot itself.
  static Expected<GuestMemory> mapShared(int memfd, uint64_t size);

  uint64_t size() const { return mapping_.size(); }
  uint64_t pageCount() const;

  // Bounds-checked access by guest address. `what` names the access in errors.
  Expected<std::span<const uint8_t>> view(uint64_t addr, uint64_t len, std::string_view what) const;
  Expected<void> read(uint64_t addr, std::span<uint8_t> out, std::string_view what) const;
  Expected<void> write(uint64_t addr, std::span<const uint8_t> data, std::string_view what);

  // Pages written by the host (write()) since the last clearHostDirty().
  const DirtyPages& hostDirty() const { return host_dirty_; }
  void clearHostDirty() { host_dirty_.clear(); }

  // Restores `pages` from `snapshot` (the snapshot's read-only mapping) by
  // copying them; the VM keeps its private copies.
  void copyPagesFrom(std::span<const uint8_t> snapshot, std::span<const uint32_t> pages);
  // Drops the private copies of `pages`, so they read from the memfd again.
  Expected<void> discardPages(std::span<const uint32_t> pages);

  // The host address of the mapping, for the backends: KVM's memory slot and
  // Unicorn's uc_mem_map_ptr. Nothing above vm/ sees it.
  uint8_t* hostBase() const { return mapping_.data(); }

 private:
  GuestMemory(Mapping mapping, uint64_t page_count);

  Mapping mapping_;
  DirtyPages host_dirty_;
};

}  // namespace sandpool::vm
