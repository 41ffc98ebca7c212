// Dirty-page tracking for the emulated backend. Unicorn writes guest memory
// through the host mapping, so the host's own MMU can tell which pages a call
// wrote: writable guest pages are mapped read-only on the host, the first
// write to each faults into a SIGSEGV handler that records the page and makes
// it writable, and the access is retried.
//
// The handler finds the tracker by address: first the one the faulting thread
// activated (the VM it is running), then a registry of every live tracker
// (host writes outside run()). No lock, no allocation. Faults in no
// tracker's range go to the previous handler.
//
// Making one page writable splits the guest mapping, which needs a new
// kernel mapping; past vm.max_map_count that mprotect fails. The handler
// then makes the whole guest mapping writable, which joins mappings and so
// cannot fail for want of one, and the tracker counts as lost: the call
// finishes, and the reset after it fails with kHostLimit, so the VM is
// dropped instead of the process.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>

#include "vm/dirty_pages.h"
#include "vm/error.h"
#include "vm/layout.h"

namespace sandpool::vm {

class WriteTracker {
 public:
  static constexpr size_t kRegistrySlots = 16384;

  // A tracker of the guest memory at `base`, registered for the SIGSEGV
  // handler; kLimitExceeded when kRegistrySlots trackers are alive.
  static Expected<std::unique_ptr<WriteTracker>> create(uint8_t* base, const MemoryLayout& layout);
  ~WriteTracker();
  WriteTracker(const WriteTracker&) = delete;
  WriteTracker& operator=(const WriteTracker&) = delete;

  // Write-protects every writable guest region; from here on, writes are seen.
  Expected<void> protectAll();
  // Write-protects `pages` again after they were restored.
  Expected<void> protect(std::span<const uint32_t> pages);

  DirtyPages& dirty() { return dirty_; }

  // True once a write could not be tracked: the dirty set is incomplete and
  // the VM cannot be reset.
  bool trackingLost() const { return tracking_lost_.load(std::memory_order_relaxed); }

  // For the SIGSEGV handler only: true if the fault was a tracked write and
  // the page is now writable.
  static bool handleFaultForSignal(uint8_t* address) noexcept;

  // Makes this tracker the one the SIGSEGV handler consults on this thread.
  class Activation {
   public:
    explicit Activation(WriteTracker& tracker);
    ~Activation();
    Activation(const Activation&) = delete;
    Activation& operator=(const Activation&) = delete;

   private:
    WriteTracker* previous_;
  };

 private:
  WriteTracker(uint8_t* base, const MemoryLayout& layout);
  static void installHandler();
  // Takes a slot of the registry; false if every slot is taken.
  bool registerRange();
  bool recordWrite(uint8_t* address) noexcept;

  uint8_t* base_;
  const MemoryLayout& layout_;
  DirtyPages dirty_;
  size_t registry_slot_;
  std::atomic<bool> tracking_lost_{false};
};

}  // namespace sandpool::vm
