// The process-wide limits every VM adds to: memory mappings (the kernel's
// vm.max_map_count) and open files (RLIMIT_NOFILE). Passing either does not
// fail cleanly: an mmap or mprotect that fails inside the emulator or inside
// the write tracker's fault handler ends the process. checkRoomForVm() says
// whether both leave a margin for one more VM (docs/server.md, "Sizing the
// machine"). It reads /proc, which the workers' system-call filter forbids,
// so VM creation on a worker cannot call it yet.
//
// Counting mappings reads /proc/self/maps, which grows with the VMs, so the
// counts are re-read only once the VMs created since the last count could
// have used the headroom it left (at most kMappingsPerVm and kFilesPerVm
// each), or when RLIMIT_NOFILE changed.
//
// Thread: any; the functions share one process-wide count.
#pragma once

#include <cstdint>

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

// Succeeds if one more VM leaves both margins; else kHostLimit naming the
// limit, e.g. "2039 of 2048 open files (RLIMIT_NOFILE) in use, 128 kept free".
Expected<void> checkRoomForVm();

// At start: raises RLIMIT_NOFILE's soft limit to its hard limit. Returns the
// soft limit now in force.
Expected<uint64_t> raiseFileLimit();

}  // namespace sandpool::vm
