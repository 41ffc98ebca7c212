/* The conformance suite's Wasm guest: state a call leaves behind (in a
 * static buffer, on the heap, in linear memory at large), per-call entropy,
 * the WASI clocks and a runaway loop. Every call must start from the
 * snapshot. */
#include <stdint.h>
#include <wasi/api.h>
#include <stdlib.h>
#include <string.h>

__attribute__((export_name("sandpool_alloc"))) void* sandpool_alloc(uint32_t size) {
  return malloc(size);
}

static char kept[256];
static uint32_t kept_size;
static char* kept_on_heap;

static uint64_t string_result(const char* text, uint32_t size) {
  return (uint64_t)(uintptr_t)text | (uint64_t)size << 32;
}

/* Keeps `text` in a static buffer and a heap copy. */
__attribute__((export_name("remember(string)"))) void remember(const char* text, uint32_t size) {
  kept_size = size < sizeof kept ? size : sizeof kept;
  memcpy(kept, text, kept_size);
  kept_on_heap = malloc(size + 1);
  memcpy(kept_on_heap, text, size);
  kept_on_heap[size] = 0;
}

/* What remember() kept, static copy then heap copy; empty from the snapshot. */
__attribute__((export_name("recall()->string"))) uint64_t recall(void) {
  const uint32_t heap_size = kept_on_heap ? (uint32_t)strlen(kept_on_heap) : 0;
  char* text = malloc(kept_size + heap_size + 1);
  memcpy(text, kept, kept_size);
  if (heap_size) memcpy(text + kept_size, kept_on_heap, heap_size);
  return string_result(text, kept_size + heap_size);
}

/* How many times linear memory holds `shifted` with every byte less one.
 * The pattern is compared shifted and never written out, so the only
 * copies found are ones a call left behind (the argument itself is one). */
__attribute__((export_name("count_unshifted(string)->i32"))) int32_t count_unshifted(
    const char* shifted, uint32_t size) {
  const volatile uint8_t* memory = (const volatile uint8_t*)1;
  const uint32_t end = (uint32_t)__builtin_wasm_memory_size(0) * 65536u;
  int32_t found = 0;
  for (uint32_t at = 1; size && at + size <= end; at++) {
    uint32_t k = 0;
    while (k < size && memory[at - 1 + k] == (uint8_t)(shifted[k] - 1)) k++;
    if (k == size) found++;
  }
  return found;
}

/* Writes the unshifted pattern to the heap, then counts it: proves the
 * count sees what a call leaves in linear memory. */
__attribute__((export_name("plant_and_count(string)->i32"))) int32_t plant_and_count(
    const char* shifted, uint32_t size) {
  char* planted = malloc(size);
  for (uint32_t k = 0; k < size; k++) planted[k] = (char)(shifted[k] - 1);
  kept_on_heap = planted;
  return count_unshifted(shifted, size);
}

/* 8 bytes from WASI random_get. */
__attribute__((export_name("random"))) uint64_t random_word(void) {
  uint64_t word = 0;
  arc4random_buf(&word, sizeof word);
  return word;
}

/* WASI clock_time_get of clock `id`: nanoseconds, or minus the errno. */
__attribute__((export_name("read_clock"))) int64_t read_clock(int32_t id) {
  __wasi_timestamp_t now = 0;
  const __wasi_errno_t error = __wasi_clock_time_get((__wasi_clockid_t)id, 1, &now);
  return error ? -(int64_t)error : (int64_t)now;
}

/* Reads the monotonic clock `reads` times: how far it went, or -1 when it
 * ever went back. */
__attribute__((export_name("monotonic_advance"))) int64_t monotonic_advance(int32_t reads) {
  const int64_t first = read_clock(__WASI_CLOCKID_MONOTONIC);
  int64_t last = first;
  for (int32_t i = 1; i < reads; i++) {
    const int64_t now = read_clock(__WASI_CLOCKID_MONOTONIC);
    if (now < last) return -1;
    last = now;
  }
  return last - first;
}

__attribute__((export_name("spin"))) void spin(void) {
  for (volatile uint64_t i = 0;; i++) {
  }
}
