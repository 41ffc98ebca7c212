/* SHA-256 as a Wasm guest: the native `sha256` guest's kernel
 * (guest/examples/sha256_kernel.h), for comparing the two. */
#include <stdint.h>
#include <stdlib.h>

#include "sha256_kernel.h"

__attribute__((export_name("sandpool_alloc"))) void* sandpool_alloc(uint32_t size) {
  return malloc(size);
}

static uint8_t digest[32];

__attribute__((export_name("sha256(bytes)->bytes"))) uint64_t sha256(const uint8_t* data,
                                                                     uint32_t size) {
  sha256_digest(data, size, digest);
  return (uint64_t)(uintptr_t)digest | (uint64_t)sizeof digest << 32;
}
