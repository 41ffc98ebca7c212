// Test guests built by guest/ (examples/ and tests/), found by name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sandpool::testing {

// The directory holding examples/ and tests/: $SANDPOOL_GUEST_DIR if set,
// else the build tree's guest/.
std::string guestDir();
// Reads guest `name` ("hello", "misbehave", ...); aborts the test if missing.
std::vector<uint8_t> readGuest(const std::string& name);

}  // namespace sandpool::testing
