// What the end-to-end benchmarks upload: a guest file's bytes.
#pragma once

#include <fstream>
#include <iterator>
#include <vector>

#include <capnp/common.h>

namespace sandpool::bench {

// The bytes of the guest file at `path`, for an upload request's `elf`
// (which copies them); empty if it cannot be read, which the server
// refuses as an invalid guest.
inline std::vector<capnp::byte> guestBytes(const char* path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace sandpool::bench
