// sha256: a real computation, SHA-256 (FIPS 180-4) of the input. The kernel
// is shared with the Wasm example (sha256_kernel.h).
#include <sandpool/guest.hpp>

#include "sha256_kernel.h"

namespace {

uint8_t digest[32];

sandpool::bytes sha256(sandpool::bytes data) {
  sha256_digest(data.data, data.size, digest);
  return {digest, sizeof digest};
}
char hex[65];

sandpool::str sha256_hex(sandpool::str text) {
  sandpool::bytes d = sha256({reinterpret_cast<const uint8_t*>(text.data), text.size});
  for (uint32_t i = 0; i < d.size; i++) {
    hex[2 * i] = "0123456789abcdef"[d.data[i] >> 4];
    hex[2 * i + 1] = "0123456789abcdef"[d.data[i] & 15];
  }
  return {hex, 64};
}

}  // namespace

void sandpool_main() {
  sandpool::export_function<sha256>("sha256");
  sandpool::export_function<sha256_hex>("sha256_hex");
}
