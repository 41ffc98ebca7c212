#include "guest_files.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>

namespace sandpool::testing {

std::string guestDir() {
  const char* dir = std::getenv("SANDPOOL_GUEST_DIR");
  return dir ? dir : SANDPOOL_GUEST_BUILD_DIR;
}

std::vector<uint8_t> readGuest(const std::string& name) {
  for (const char* sub : {"/examples/", "/tests/"}) {
    std::ifstream in(guestDir() + sub + name, std::ios::binary);
    if (in) return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  ADD_FAILURE() << "guest '" << name << "' not found under " << guestDir();
  return {};
}

}  // namespace sandpool::testing
