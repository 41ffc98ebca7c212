// A validated guest ELF: the segments to load and the entry point. Parsing
// checks everything a loader would otherwise trust (class, machine, type,
// segment bounds and overlaps, entry inside code, sizes) so that nothing
// runs from a file that was not accepted here.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "vm/config.h"
#include "vm/error.h"

namespace sandpool::vm {

enum Access : uint8_t {
  kAccessNone = 0,
  kAccessRead = 1,
  kAccessWrite = 2,
  kAccessExecute = 4,
};

struct ImageSegment {
  uint64_t vaddr = 0;     // page aligned (the loader rounds down)
  uint64_t mem_size = 0;  // page rounded
  uint8_t access = kAccessNone;
  // File bytes to copy to `vaddr + data_offset`; the rest is zero.
  uint64_t data_offset = 0;
  std::vector<uint8_t> data;
};

class GuestImage {
 public:
  // Parses and validates `elf` for a guest address space of `config.memory_size`.
  static Expected<GuestImage> parse(std::span<const uint8_t> elf, const VmConfig& config);

  uint64_t entry() const { return entry_; }
  const std::vector<ImageSegment>& segments() const { return segments_; }
  uint64_t end() const;  // first address past the last segment, page aligned

 private:
  uint64_t entry_ = 0;
  std::vector<ImageSegment> segments_;
};

}  // namespace sandpool::vm
