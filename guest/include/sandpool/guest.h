/* The sandpool guest SDK, C interface.
 *
 * A guest defines sandpool_main(), which runs once at boot and registers the
 * functions the guest exports. The host snapshots the guest right after it,
 * so everything sandpool_main() sets up is there, fresh, at every call, and
 * nothing a call changes survives it. */
#ifndef SANDPOOL_GUEST_H
#define SANDPOOL_GUEST_H

#include <sandpool/abi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sandpool_buffer {
  const uint8_t* data;
  uint32_t size;
} sandpool_buffer;

typedef struct sandpool_value {
  sandpool_type type;
  union {
    int32_t i32;
    int64_t i64;
    uint32_t u32;
    uint64_t u64;
    float f32;
    double f64;
    bool b;
    sandpool_buffer buf; /* string or bytes */
  };
} sandpool_value;

/* An exported function. `args` were checked against the declared parameter
 * types by the host and decoded by the SDK; string and bytes arguments point
 * into the input buffer and stay valid for the whole call. The function
 * stores its result in `*result` (type preset to the declared result type);
 * string or bytes results may point to any guest memory. */
typedef void (*sandpool_function)(const sandpool_value* args, uint32_t arg_count,
                                  sandpool_value* result);

/* Registers an export. Call from sandpool_main() only. Aborts the boot on a
 * bad declaration (too many exports or parameters, name too long). */
void sandpool_export(const char* name, sandpool_function function, sandpool_type result,
                     uint32_t param_count, const sandpool_type* param_types);

/* Defined by the guest: registers exports and initialises global state. */
void sandpool_main(void);

/* Makes the current call fail with `message` (the result is discarded). The
 * function should return after calling it. */
void sandpool_fail(const char* message);

/* Ends the current call at once with a guest abort carrying `message`. */
SANDPOOL_NORETURN void sandpool_abort(const char* message);

/* Writes text to the call's captured output (the `print` host function). */
void sandpool_print(const char* text);
void sandpool_print_n(const char* text, size_t size);

/* Calls host function `name`. Returns 0 and fills `*result` on success;
 * string and bytes results point into the host-call buffer and stay valid
 * until the next host call. Returns -1 on failure, with the host's message
 * in sandpool_host_error(). */
int sandpool_host_call(const char* name, const sandpool_value* args, uint32_t arg_count,
                       sandpool_value* result);
const char* sandpool_host_error(void);

/* 32 bytes of fresh host entropy for the current call (seed PRNGs here, not
 * in sandpool_main(), or every call gets the same sequence). */
const uint8_t* sandpool_call_entropy(void);

/* Takes up to `max_size` bytes (whole pages, page-aligned) off the top of the
 * heap for the rest of the guest's life, leaving at least `keep` bytes to
 * malloc; stores the size taken in `*size` (possibly 0). The pages are zero
 * until written, and cost nothing until touched. For regions that must grow
 * in place, such as a Wasm linear memory. */
void* sandpool_heap_reserve(size_t max_size, size_t keep, size_t* size);

/* The boot info the host gave this guest. */
const sandpool_boot_info* sandpool_boot(void);

#ifdef __cplusplus
}
#endif

#endif /* SANDPOOL_GUEST_H */
