// The process-wide limits every VM adds to: memory mappings (the kernel's
// vm.max_map_count) and open files (RLIMIT_NOFILE). Passing either does not
// fail cleanly inside the emulator (an allocation it cannot make ends the
// process), so a new VM is refused with kHostLimit while either limit is
// within its margin (docs/server.md, "Sizing the machine").
//
// Counting reads /proc, which the workers' system-call filter forbids, so a
// HostLimitWatch counts on a thread of its own: a VM creation takes one of
// the VMs the last count left room for (at most kMappingsPerVm mappings and
// kFilesPerVm files each); when none is left it asks the thread for a new
// count and waits for it. A count that finds no room is kept for
// kRefusalHoldsFor, so a burst of refused creations reads /proc once.
//
// Thread: any.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <thread>

#include "vm/error.h"

namespace sandpool::vm {

struct HostUsage {
  uint64_t mappings = 0, mapping_limit = 0;  // /proc/self/maps, vm.max_map_count
  uint64_t files = 0, file_limit = 0;        // /proc/self/fd, RLIMIT_NOFILE's soft limit
};

// What one VM may add, when created and while it runs, in the worst case
// the re-count allows for (an idle warm VM holds about 7 mappings and, on the
// emulated backend, no file; a KVM VM holds 3 files).
inline constexpr uint64_t kMappingsPerVm = 64;
inline constexpr uint64_t kFilesPerVm = 4;

// The counts now, read from /proc.
Expected<HostUsage> readHostUsage();

// The headroom kept below each limit: a sixteenth of it, at least 256
// mappings and 32 files (for the server's connections, uploads and the
// calls of VMs that already exist).
uint64_t mappingMargin(uint64_t mapping_limit);
uint64_t fileMargin(uint64_t file_limit);

// The counter behind takeRoomForVm(). While one exists, Sandbox::create
// takes room from it; without one (tools, tests of the VM layer) nothing is
// checked. One at a time.
class HostLimitWatch {
 public:
  static constexpr std::chrono::milliseconds kRefusalHoldsFor{100};

  // `mapping_limit_cap` lowers the mapping limit below vm.max_map_count
  // (sandpoold's --max-mappings); 0 leaves it at the sysctl.
  explicit HostLimitWatch(uint64_t mapping_limit_cap = 0);
  ~HostLimitWatch();
  HostLimitWatch(const HostLimitWatch&) = delete;
  HostLimitWatch& operator=(const HostLimitWatch&) = delete;

  // Room for one more VM, or kHostLimit naming the limit, e.g.
  // "vm.max_map_count: 61 500 of 65 530 memory mappings in use, 4 095 kept free".
  Expected<void> takeRoomForVm();

 private:
  void countLoop();
  // Reads /proc and sets what the next creations may take; on the watch's thread.
  void count();

  const uint64_t mapping_limit_cap_;
  std::mutex mutex_;
  std::condition_variable count_wanted_cv_, counted_cv_;
  bool count_wanted_ = false, stopping_ = false;
  uint64_t counts_done_ = 0;
  uint64_t vms_before_recount_ = 0;
  std::optional<Error> refusal_;
  std::chrono::steady_clock::time_point refusal_until_;
  std::thread thread_;
};

// Room for one more VM from the HostLimitWatch in force, if any.
Expected<void> takeRoomForVm();

// At start: raises RLIMIT_NOFILE's soft limit to its hard limit. Returns the
// soft limit now in force.
Expected<uint64_t> raiseFileLimit();

}  // namespace sandpool::vm
