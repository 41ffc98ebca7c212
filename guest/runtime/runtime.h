/* Internal to the guest runtime. */
#ifndef SANDPOOL_RUNTIME_H
#define SANDPOOL_RUNTIME_H
#include <sandpool/abi.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void sandpool_heap_init(const sandpool_boot_info* boot);
void sandpool_cpu_init(void);

static inline void sandpool_out(uint32_t port, uint32_t value) {
  /* Always the one-byte `out dx, eax` (0xEF): the host relies on its length. */
  __asm__ volatile("outl %%eax, %%dx" : : "a"(value), "d"(port) : "memory");
}

SANDPOOL_NORETURN void sandpool_abort_with(uint32_t code, const char* message, uint64_t size);

#ifdef __cplusplus
}
#endif

#endif
