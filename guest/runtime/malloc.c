/* The guest heap allocator: power-of-two size classes over a bump pointer
 * between boot_info.heap_start and heap_end. Small and predictable; a call
 * starts from the snapshot's heap every time, so fragmentation never
 * outlives a call. */
#include <sandpool/guest.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

enum { kMinShift = 4, kClasses = 40 };

typedef struct block_header {
  uint64_t size_class;
  uint64_t reserved; /* keeps payloads 16-byte aligned */
} block_header;

typedef struct free_block {
  struct free_block* next;
} free_block;

static uintptr_t heap_next;
static uintptr_t heap_end;
static free_block* free_lists[kClasses];

void sandpool_heap_init(const sandpool_boot_info* boot) {
  heap_next = (uintptr_t)boot->heap_start;
  heap_end = (uintptr_t)boot->heap_end;
}

static unsigned size_class_of(size_t size) {
  unsigned c = kMinShift;
  while (c < kClasses && ((size_t)1 << c) < size) c++;
  return c;
}

void* malloc(size_t size) {
  if (size > ((size_t)1 << (kClasses - 1)) - sizeof(block_header)) return 0;
  unsigned c = size_class_of(size + sizeof(block_header));
  block_header* header;
  if (free_lists[c]) {
    header = (block_header*)free_lists[c];
    free_lists[c] = free_lists[c]->next;
  } else {
    size_t block = (size_t)1 << c;
    if (heap_end - heap_next < block) return 0;
    header = (block_header*)heap_next;
    heap_next += block;
  }
  header->size_class = c;
  return header + 1;
}

void* sandpool_heap_reserve(size_t max_size, size_t keep, size_t* size) {
  uintptr_t top = heap_end & ~(uintptr_t)(SANDPOOL_PAGE_SIZE - 1);
  size_t available = top > heap_next + keep ? top - heap_next - keep : 0;
  size_t taken = (max_size < available ? max_size : available) & ~(size_t)(SANDPOOL_PAGE_SIZE - 1);
  heap_end = top - taken;
  *size = taken;
  return (void*)heap_end;
}

void free(void* ptr) {
  if (!ptr) return;
  block_header* header = (block_header*)ptr - 1;
  unsigned c = (unsigned)header->size_class;
  if (c < kMinShift || c >= kClasses) sandpool_abort("free(): pointer not from malloc");
  free_block* block = (free_block*)header;
  block->next = free_lists[c];
  free_lists[c] = block;
}

void* calloc(size_t count, size_t size) {
  if (size && count > (size_t)-1 / size) return 0;
  void* p = malloc(count * size);
  if (p) memset(p, 0, count * size);
  return p;
}

void* realloc(void* ptr, size_t size) {
  if (!ptr) return malloc(size);
  block_header* header = (block_header*)ptr - 1;
  size_t capacity = ((size_t)1 << header->size_class) - sizeof(block_header);
  if (size <= capacity) return ptr;
  void* p = malloc(size);
  if (!p) return 0;
  memcpy(p, ptr, capacity);
  free(ptr);
  return p;
}
