// GuestImage::parse on arbitrary bytes, as sandpoold parses an uploaded
// guest. Every input is refused with kInvalidGuest or accepted as an image
// whose segments the loader can copy without a bounds check of its own:
// inside guest memory, page aligned, disjoint, file bytes inside their
// segment, entry in an executable segment. An accepted image's layout is
// computed too (the next step of an upload) and must be sorted and disjoint.
#include <algorithm>
#include <cstdint>
#include <span>

#include <sandpool/abi.h>

#include "tests/fuzz/fuzz_check.h"
#include "vm/guest_image.h"
#include "vm/layout.h"

using namespace sandpool::vm;
using sandpool::fuzz::require;

namespace {

// Small enough that segments reach its end easily; large enough for the
// real guests (corpus) with the default buffers and stack.
VmConfig fuzzConfig() {
  VmConfig config;
  config.memory_size = 8 * kMiB;
  return config;
}

void checkImage(const GuestImage& image, const VmConfig& config) {
  const auto& segments = image.segments();
  require(!segments.empty(), "an accepted image has a segment");
  bool entry_in_code = false;
  for (size_t i = 0; i < segments.size(); i++) {
    const ImageSegment& s = segments[i];
    require(s.vaddr % kPageSize == 0 && s.mem_size % kPageSize == 0, "segments are page aligned");
    require(s.vaddr >= SANDPOOL_IMAGE_BASE && s.mem_size <= config.memory_size - s.vaddr,
            "segments lie inside guest memory above the image base");
    require(s.data_offset <= s.mem_size && s.data.size() <= s.mem_size - s.data_offset,
            "a segment's file bytes lie inside the segment");
    require(!((s.access & kAccessWrite) && (s.access & kAccessExecute)),
            "no segment is writable and executable");
    if (i > 0)
      require(segments[i - 1].vaddr + segments[i - 1].mem_size <= s.vaddr,
              "segments are sorted, disjoint");
    if ((s.access & kAccessExecute) && image.entry() >= s.vaddr &&
        image.entry() - s.vaddr < s.mem_size) {
      entry_in_code = true;
    }
  }
  require(entry_in_code, "the entry point lies in an executable segment");
  require(image.end() <= config.memory_size, "the image ends inside guest memory");

  auto layout = computeLayout(image, config);
  if (!layout) {
    require(layout.error().kind == ErrorKind::kInvalidGuest,
            "a layout is refused as an invalid guest");
    return;
  }
  for (size_t i = 0; i < layout->regions.size(); i++) {
    const Region& r = layout->regions[i];
    require(r.size > 0 && r.end() <= layout->memory_size, "regions lie inside guest memory");
    if (i > 0) require(layout->regions[i - 1].end() <= r.start, "regions are sorted and disjoint");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const VmConfig config = fuzzConfig();
  auto image = GuestImage::parse(std::span<const uint8_t>(data, size), config);
  if (image) {
    checkImage(*image, config);
  } else {
    require(image.error().kind == ErrorKind::kInvalidGuest, "a refused ELF is an invalid guest");
  }
  return 0;
}
