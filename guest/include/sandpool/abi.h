/* The sandpool guest ABI: the one definition shared by the host (vm/) and the
 * guest SDK (guest/). Everything a guest and the host agree on lives here:
 * the I/O ports, the boot info, the buffer messages and the value encoding.
 * docs/guest-abi.md describes the same contract in prose.
 *
 * All multi-byte integers are little-endian. All structures are packed by
 * construction (explicit sizes, no implicit padding) and checked below. */
#ifndef SANDPOOL_ABI_H
#define SANDPOOL_ABI_H

#include <stdint.h>

#define SANDPOOL_ABI_VERSION 1u

#ifdef __cplusplus
#define SANDPOOL_NORETURN [[noreturn]]
#else
#define SANDPOOL_NORETURN _Noreturn
#endif

/* Guest virtual == guest physical (identity mapping). Page 0 is never mapped. */
#define SANDPOOL_PAGE_SIZE 4096u
#define SANDPOOL_BOOT_INFO_ADDR 0x1000u
/* Host-owned area (page tables on KVM); never mapped for the guest. */
#define SANDPOOL_HOST_AREA_START 0x2000u
#define SANDPOOL_HOST_AREA_END 0x100000u
/* Guest ELF segments must lie at or above this address (the SDK links at it). */
#define SANDPOOL_IMAGE_BASE 0x400000u

/* `out dx, eax` on these ports is how a guest talks to the host. Any other
 * port, `hlt`, or an unhandled exception is a guest fault. */
#define SANDPOOL_PORT_READY \
  0x5500u /* eax: size of the export table in the output buffer; rsi: resume address */
#define SANDPOOL_PORT_DONE 0x5501u      /* eax: size of the result in the output buffer */
#define SANDPOOL_PORT_HOST_CALL 0x5502u /* eax: size of the request in the host-call buffer */
#define SANDPOOL_PORT_ABORT 0x5503u /* eax: abort code; rsi: message address; rdi: message length \
                                     */
#define SANDPOOL_PORT_FAULT \
  0x5504u /* eax: vector; rsi: error code; rdi: fault address (cr2); r8: rip */

/* Abort codes (eax on SANDPOOL_PORT_ABORT). */
#define SANDPOOL_ABORT_EXPLICIT 0u /* the guest called sandpool_abort() */
#define SANDPOOL_ABORT_OUT_OF_MEMORY \
  1u /* the guest's allocator could not satisfy a request it must not fail */
#define SANDPOOL_ABORT_BAD_REQUEST 2u /* the guest could not decode the call request */
#define SANDPOOL_ABORT_FUNCTION_ERROR \
  3u /* reserved: function errors travel in the result instead */
#define SANDPOOL_ABORT_RESULT_TOO_LARGE \
  4u /* the call's result (or error message) does not fit the output buffer */

/* Typed values. */
typedef enum sandpool_type {
  SANDPOOL_TYPE_VOID = 0,
  SANDPOOL_TYPE_I32 = 1,
  SANDPOOL_TYPE_I64 = 2,
  SANDPOOL_TYPE_U32 = 3,
  SANDPOOL_TYPE_U64 = 4,
  SANDPOOL_TYPE_F32 = 5,
  SANDPOOL_TYPE_F64 = 6,
  SANDPOOL_TYPE_BOOL = 7,
  SANDPOOL_TYPE_STRING = 8,
  SANDPOOL_TYPE_BYTES = 9,
} sandpool_type;
#define SANDPOOL_TYPE_LAST SANDPOOL_TYPE_BYTES

/* Encoding of one value: a one-byte type tag, then the payload:
 *   i32, u32, f32: 4 bytes; i64, u64, f64: 8 bytes; bool: 1 byte (0 or 1);
 *   string, bytes: u32 length, then that many bytes (strings are UTF-8, no NUL);
 *   void: nothing. */

/* Written by the host at SANDPOOL_BOOT_INFO_ADDR before the guest starts.
 * Read-only for the guest. */
typedef struct sandpool_boot_info {
  uint32_t magic; /* SANDPOOL_BOOT_MAGIC */
  uint32_t abi_version;
  uint64_t memory_size;
  uint64_t input_addr;
  uint64_t input_size;
  uint64_t output_addr;
  uint64_t output_size;
  uint64_t host_call_addr;
  uint64_t host_call_size;
  uint64_t heap_start;
  uint64_t heap_end;
  uint64_t stack_top;
  uint64_t reserved;   /* zero */
  uint8_t entropy[32]; /* fresh at boot; every call brings its own */
} sandpool_boot_info;
#define SANDPOOL_BOOT_MAGIC 0x544f4f42u /* "BOOT" */

/* Export table, written by the guest into the output buffer before READY:
 *   header, then per export: u8 result type, u8 parameter count,
 *   parameter types (one byte each), u16 name length, name bytes. */
typedef struct sandpool_export_table_header {
  uint32_t magic; /* SANDPOOL_EXPORTS_MAGIC */
  uint32_t count;
} sandpool_export_table_header;
#define SANDPOOL_EXPORTS_MAGIC 0x58455053u /* "SPEX" */
#define SANDPOOL_MAX_EXPORTS 256u
#define SANDPOOL_MAX_PARAMS 16u
#define SANDPOOL_MAX_NAME 64u

/* A call, written by the host into the input buffer: header, then
 * `arg_count` encoded values taking `args_size` bytes. */
typedef struct sandpool_call_header {
  uint32_t magic;          /* SANDPOOL_CALL_MAGIC */
  uint32_t function_index; /* index into the export table */
  uint32_t arg_count;
  uint32_t args_size;
  uint8_t entropy[32]; /* fresh for every call */
} sandpool_call_header;
#define SANDPOOL_CALL_MAGIC 0x4c4c4143u /* "CALL" */

/* A result, written by the guest into the output buffer before DONE:
 * header, then `size` bytes: one encoded value when status is OK, or the
 * error message (UTF-8, no length prefix) when status is ERROR. */
typedef struct sandpool_result_header {
  uint32_t magic; /* SANDPOOL_RESULT_MAGIC */
  uint32_t status;
  uint32_t size;
  uint32_t reserved;
} sandpool_result_header;
#define SANDPOOL_RESULT_MAGIC 0x544c5352u /* "RSLT" */
#define SANDPOOL_STATUS_OK 0u
#define SANDPOOL_STATUS_ERROR 1u

/* A host call, written by the guest into the host-call buffer: header, name
 * bytes, then `arg_count` encoded values taking `args_size` bytes. The host
 * answers in the same buffer with a sandpool_result_header and its payload. */
typedef struct sandpool_host_call_header {
  uint32_t magic; /* SANDPOOL_HOST_CALL_MAGIC */
  uint32_t name_size;
  uint32_t arg_count;
  uint32_t args_size;
} sandpool_host_call_header;
#define SANDPOOL_HOST_CALL_MAGIC 0x4c4c4348u /* "HCLL" */

/* Host functions every sandpool host provides. */
#define SANDPOOL_HOST_PRINT "print" /* (string) -> void; captured, bounded per call */
/* (u32 clock) -> u64 nanoseconds, read by the host when asked: realtime is
 * since the Unix epoch, monotonic since the host process started. */
#define SANDPOOL_HOST_CLOCK "clock"
#define SANDPOOL_CLOCK_REALTIME 0u
#define SANDPOOL_CLOCK_MONOTONIC 1u

#ifdef __cplusplus
static_assert(sizeof(sandpool_boot_info) == 128, "boot info layout");
static_assert(sizeof(sandpool_export_table_header) == 8, "export table header layout");
static_assert(sizeof(sandpool_call_header) == 48, "call header layout");
static_assert(sizeof(sandpool_result_header) == 16, "result header layout");
static_assert(sizeof(sandpool_host_call_header) == 16, "host call header layout");
#else
_Static_assert(sizeof(sandpool_boot_info) == 128, "boot info layout");
_Static_assert(sizeof(sandpool_call_header) == 48, "call header layout");
_Static_assert(sizeof(sandpool_result_header) == 16, "result header layout");
_Static_assert(sizeof(sandpool_host_call_header) == 16, "host call header layout");
#endif

#endif /* SANDPOOL_ABI_H */
