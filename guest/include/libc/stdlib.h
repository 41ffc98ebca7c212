/* sandpool guest libc: heap allocation over the guest heap, and abort(). */
#ifndef SANDPOOL_LIBC_STDLIB_H
#define SANDPOOL_LIBC_STDLIB_H
#include <sandpool/abi.h>
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
/* Return NULL when the heap is exhausted. */
void* malloc(size_t size);
void* calloc(size_t count, size_t size);
void* realloc(void* ptr, size_t size);
void free(void* ptr);
/* Ends the call with a guest abort. */
SANDPOOL_NORETURN void abort(void);
int abs(int x);
long strtol(const char* s, char** end, int base);
#ifdef __cplusplus
}
#endif
#endif
