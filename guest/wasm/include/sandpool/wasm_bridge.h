/* The Wasm bridge: what the C that sandpool generates for a translated
 * module (wasm/glue_writer.cpp) calls into. Not an API for guest authors.
 *
 * A module translated by wasm2c is an ordinary SDK guest: its generated
 * sandpool_main() instantiates the module once at boot (so the host
 * snapshots the initialised instance), and each export is an SDK export
 * whose wrapper converts sandpool values to Wasm values and back. A trap ends
 * the call with a guest abort whose message starts with "wasm trap: "; the
 * host resets the VM after it like after any failed call. */
#ifndef SANDPOOL_WASM_BRIDGE_H
#define SANDPOOL_WASM_BRIDGE_H

#include <sandpool/guest.h>
#include <wasm-rt.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The instance wasm2c passes to every WASI and sandpool import: the module's
 * exported linear memory, set by the glue right after instantiation (NULL
 * when the module exports none; memory-using imports then fail with EFAULT). */
struct Z_wasi_snapshot_preview1_instance_t {
  wasm_rt_memory_t* memory;
};
struct Z_sandpool_instance_t {
  wasm_rt_memory_t* memory;
};
extern struct Z_wasi_snapshot_preview1_instance_t sandpool_wasm_wasi;
extern struct Z_sandpool_instance_t sandpool_wasm_host;

/* Aborts the call (or the boot) with "wasm <what>: <message>". */
SANDPOOL_NORETURN void sandpool_wasm_abort(const char* what, const char* message);

/* Copies `value` (string or bytes) into linear memory through the module's
 * allocator, whose result `address` must leave room for `size` bytes;
 * aborts the call when it does not. */
void sandpool_wasm_copy_in(wasm_rt_memory_t* memory, uint32_t address,
                           const sandpool_buffer* value);

/* Points `result` at the `size` bytes at `address` of linear memory, packed
 * as address | size << 32 by the module; aborts the call when they lie
 * outside it. */
void sandpool_wasm_take_result(wasm_rt_memory_t* memory, uint64_t packed, sandpool_value* result);

/* Calls host function `name` for an import from the "sandpool" module; the
 * result must have type `result_type`. A failing host call aborts the call
 * naming the import. */
sandpool_value sandpool_wasm_host_call(const char* name, const sandpool_value* args,
                                       uint32_t arg_count, sandpool_type result_type);

/* Points `arg` (whose type the caller set) at the `size` bytes at `address`
 * of linear memory, a string or bytes argument of a "sandpool" import;
 * traps (out of bounds) when they lie outside it. */
void sandpool_wasm_import_buffer(wasm_rt_memory_t* memory, uint32_t address, uint32_t size,
                                 sandpool_value* arg);

/* Copies a host function's string or bytes `result` into memory the
 * module's `allocate` (its sandpool_alloc export) gives, and returns it as
 * address | size << 32; aborts the call when the allocator's answer lies
 * outside linear memory. */
uint64_t sandpool_wasm_return_buffer(wasm_rt_memory_t* memory, const sandpool_value* result,
                                     uint32_t (*allocate)(uint32_t size));

#ifdef __cplusplus
}
#endif

#endif /* SANDPOOL_WASM_BRIDGE_H */
