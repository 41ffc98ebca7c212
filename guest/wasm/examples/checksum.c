/* A compute kernel as a Wasm guest: FNV-1a over bytes, and a float kernel. */
#include <stdint.h>
#include <stdlib.h>

__attribute__((export_name("sandpool_alloc"))) void* sandpool_alloc(uint32_t size) {
  return malloc(size);
}

__attribute__((export_name("fnv1a(bytes)->i64"))) uint64_t fnv1a(const uint8_t* data,
                                                                 uint32_t size) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (uint32_t i = 0; i < size; i++) hash = (hash ^ data[i]) * 0x100000001b3ull;
  return hash;
}

/* Sum of floor(i * step) for i < n: exercises the bridge's rounding. */
__attribute__((export_name("floor_sum"))) double floor_sum(double step, int32_t n) {
  double sum = 0;
  for (int32_t i = 0; i < n; i++) sum += __builtin_floor(i * step);
  return sum;
}
