// Per-guest VM settings: memory size, buffer sizes and per-call limits.
// Operators set them through sandpoold's flags; the defaults suit small
// functions.
#pragma once

#include <chrono>
#include <cstdint>

namespace sandpool::vm {

inline constexpr uint64_t kMiB = 1024 * 1024;

struct VmConfig {
  uint64_t memory_size = 64 * kMiB;      // whole guest address space, a multiple of 2 MiB
  uint64_t stack_size = 1 * kMiB;        // below the top of memory, with a guard page under it
  uint64_t input_size = 1 * kMiB;        // call requests (arguments)
  uint64_t output_size = 1 * kMiB;       // results, export table
  uint64_t host_call_size = 256 * 1024;  // host-call requests and replies
  uint64_t max_binary_size = 32 * kMiB;  // largest accepted guest ELF
  std::chrono::milliseconds boot_timeout{2000};  // guest init, before the snapshot
  uint32_t max_host_calls = 100000;              // per call
  uint64_t max_output_bytes = 64 * 1024;         // print() output kept per call
};

}  // namespace sandpool::vm
