/* The guest's own CPU tables: a GDT with a 64-bit code segment and a TSS,
 * and an IDT whose handlers report every CPU exception to the host through
 * SANDPOOL_PORT_FAULT (vector, error code, cr2, rip). Exceptions run on a
 * separate IST stack, so a stack overflow into the guard page still reports
 * cleanly instead of escalating to a triple fault. */
#include <sandpool/abi.h>
#include <stdint.h>

#include "runtime.h"

typedef struct __attribute__((packed)) tss64 {
  uint32_t reserved0;
  uint64_t rsp[3];
  uint64_t reserved1;
  uint64_t ist[7];
  uint64_t reserved2;
  uint16_t reserved3;
  uint16_t iomap_base;
} tss64;

typedef struct __attribute__((packed)) idt_gate {
  uint16_t offset_low;
  uint16_t selector;
  uint8_t ist;
  uint8_t type_attr;
  uint16_t offset_mid;
  uint32_t offset_high;
  uint32_t reserved;
} idt_gate;

typedef struct __attribute__((packed)) table_pointer {
  uint16_t limit;
  uint64_t base;
} table_pointer;

enum { kCodeSelector = 0x08, kDataSelector = 0x10, kTssSelector = 0x18, kVectors = 32 };

static uint64_t gdt[5] __attribute__((aligned(16)));
static tss64 tss __attribute__((aligned(16)));
static idt_gate idt[kVectors] __attribute__((aligned(16)));
static uint8_t exception_stack[16384] __attribute__((aligned(16)));

/* Vectors 8, 10-14, 17, 21, 29, 30 push an error code; the others get a 0. */
#define STUB_NO_ERROR(n) "fault_stub_" #n ":\n pushq $0\n pushq $" #n "\n jmp fault_common\n"
#define STUB_ERROR(n) "fault_stub_" #n ":\n pushq $" #n "\n jmp fault_common\n"

__asm__(".text\n" STUB_NO_ERROR(0) STUB_NO_ERROR(1) STUB_NO_ERROR(2) STUB_NO_ERROR(3)
            STUB_NO_ERROR(4) STUB_NO_ERROR(5) STUB_NO_ERROR(6) STUB_NO_ERROR(7) STUB_ERROR(8)
                STUB_NO_ERROR(9) STUB_ERROR(10) STUB_ERROR(11) STUB_ERROR(12) STUB_ERROR(13)
                    STUB_ERROR(14) STUB_NO_ERROR(15) STUB_NO_ERROR(16) STUB_ERROR(17)
                        STUB_NO_ERROR(18) STUB_NO_ERROR(19) STUB_NO_ERROR(20) STUB_ERROR(21)
                            STUB_NO_ERROR(22) STUB_NO_ERROR(23) STUB_NO_ERROR(24) STUB_NO_ERROR(25)
                                STUB_NO_ERROR(26) STUB_NO_ERROR(27) STUB_NO_ERROR(28) STUB_ERROR(29)
                                    STUB_ERROR(30) STUB_NO_ERROR(31)
        /* Stack: vector, error code, rip, cs, rflags, rsp, ss. */
        "fault_common:\n"
        " movq (%rsp), %rax\n"
        " movq 8(%rsp), %rsi\n"
        " movq %cr2, %rdi\n"
        " movq 16(%rsp), %r8\n"
        " movl $"
        "0x5504"
        ", %edx\n"
        " outl %eax, %dx\n"
        "1: hlt\n jmp 1b\n");

#define STUB_ADDR(n) extern char fault_stub_##n[];
STUB_ADDR(0)
STUB_ADDR(1) STUB_ADDR(2) STUB_ADDR(3) STUB_ADDR(4) STUB_ADDR(5) STUB_ADDR(6) STUB_ADDR(7)
    STUB_ADDR(8) STUB_ADDR(9) STUB_ADDR(10) STUB_ADDR(11) STUB_ADDR(12) STUB_ADDR(13) STUB_ADDR(14)
        STUB_ADDR(15) STUB_ADDR(16) STUB_ADDR(17) STUB_ADDR(18) STUB_ADDR(19) STUB_ADDR(20)
            STUB_ADDR(21) STUB_ADDR(22) STUB_ADDR(23) STUB_ADDR(24) STUB_ADDR(25) STUB_ADDR(26)
                STUB_ADDR(27) STUB_ADDR(28) STUB_ADDR(29) STUB_ADDR(30) STUB_ADDR(31)

                    static char* const stubs[kVectors] = {
                        fault_stub_0,  fault_stub_1,  fault_stub_2,  fault_stub_3,  fault_stub_4,
                        fault_stub_5,  fault_stub_6,  fault_stub_7,  fault_stub_8,  fault_stub_9,
                        fault_stub_10, fault_stub_11, fault_stub_12, fault_stub_13, fault_stub_14,
                        fault_stub_15, fault_stub_16, fault_stub_17, fault_stub_18, fault_stub_19,
                        fault_stub_20, fault_stub_21, fault_stub_22, fault_stub_23, fault_stub_24,
                        fault_stub_25, fault_stub_26, fault_stub_27, fault_stub_28, fault_stub_29,
                        fault_stub_30, fault_stub_31};

_Static_assert(SANDPOOL_PORT_FAULT == 0x5504, "fault_common hard-codes the fault port");

void sandpool_cpu_init(void) {
  gdt[0] = 0;
  gdt[1] = 0x00209a0000000000ull; /* 64-bit code, present, ring 0 */
  gdt[2] = 0x0000920000000000ull; /* data, present, writable */
  uint64_t base = (uint64_t)&tss;
  uint64_t limit = sizeof tss - 1;
  gdt[3] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) |
           (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
  gdt[4] = base >> 32;
  tss.ist[0] = (uint64_t)(exception_stack + sizeof exception_stack);
  tss.iomap_base = sizeof tss;

  for (int v = 0; v < kVectors; v++) {
    uint64_t handler = (uint64_t)stubs[v];
    idt[v].offset_low = handler & 0xffff;
    idt[v].selector = kCodeSelector;
    idt[v].ist = 1;
    idt[v].type_attr = 0x8e; /* present, ring 0, 64-bit interrupt gate */
    idt[v].offset_mid = (handler >> 16) & 0xffff;
    idt[v].offset_high = handler >> 32;
    idt[v].reserved = 0;
  }

  table_pointer gdtr = {sizeof gdt - 1, (uint64_t)gdt};
  table_pointer idtr = {sizeof idt - 1, (uint64_t)idt};
  __asm__ volatile(
      "lgdt %0\n"
      "lidt %1\n"
      "pushq %2\n"
      "leaq 1f(%%rip), %%rax\n"
      "pushq %%rax\n"
      "lretq\n"
      "1:\n"
      "movw %w3, %%ax\n"
      "movw %%ax, %%ds\n"
      "movw %%ax, %%es\n"
      "movw %%ax, %%ss\n"
      "movw %w4, %%ax\n"
      "ltr %%ax\n"
      :
      : "m"(gdtr), "m"(idtr), "i"(kCodeSelector), "r"((uint16_t)kDataSelector),
        "r"((uint16_t)kTssSelector)
      : "rax", "memory");
}
