// The host's view of guest memory wherever the guest chose the address or
// wrote the bytes: abort messages, host calls and their replies, call
// requests, results and the export table. Every access must lie wholly in
// regions of the layout that the guest itself can read (for read()) or write
// (for write()); page 0, the host area (page tables and boot internals on
// KVM), the guard page, gaps and anything past guest memory are refused with
// a guest-fault naming the address and what lies there. So a guest pointer
// can never make the host read bytes the guest could not have read itself.
//
// GuestMemory's own view() checks only the bounds of memory; the backends and
// the image writer use it (or the host base) for the host area. Code serving
// the guest ABI goes through this class instead.
//
// Thread: as GuestMemory; a GuestView is two references, made where needed.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "vm/error.h"
#include "vm/guest_memory.h"
#include "vm/layout.h"

namespace sandpool::vm {

class GuestView {
 public:
  GuestView(GuestMemory& memory, const MemoryLayout& layout) : memory_(memory), layout_(layout) {}

  // `len` bytes at guest address `addr`, all in guest-readable regions. An
  // empty range reads nothing and is always allowed. `what` names the access.
  Expected<std::span<const uint8_t>> read(uint64_t addr, uint64_t len, std::string_view what) const;
  // Writes `data` at `addr`, all in guest-writable regions (recorded as dirty).
  Expected<void> write(uint64_t addr, std::span<const uint8_t> data, std::string_view what);

  const MemoryLayout& layout() const { return layout_; }

 private:
  Expected<void> check(uint64_t addr, uint64_t len, uint8_t access, std::string_view what) const;

  GuestMemory& memory_;
  const MemoryLayout& layout_;
};

}  // namespace sandpool::vm
