/* Value conversion between sandpool calls and a translated module's linear
 * memory, and host calls for "sandpool" imports (wasm_bridge.h). */
#include <sandpool/wasm_bridge.h>
#include <stdlib.h>
#include <string.h>

struct Z_sandpool_instance_t sandpool_wasm_host;

static size_t append(char* text, size_t at, size_t capacity, const char* part) {
  while (*part && at + 1 < capacity) text[at++] = *part++;
  text[at] = 0;
  return at;
}

SANDPOOL_NORETURN void sandpool_wasm_abort(const char* what, const char* message) {
  char text[256];
  size_t at = append(text, 0, sizeof text, "wasm ");
  at = append(text, at, sizeof text, what);
  at = append(text, at, sizeof text, ": ");
  append(text, at, sizeof text, message);
  sandpool_abort(text);
}

void sandpool_wasm_copy_in(wasm_rt_memory_t* memory, uint32_t address,
                           const sandpool_buffer* value) {
  if ((uint64_t)address + value->size > memory->size) {
    sandpool_wasm_abort("argument", "sandpool_alloc returned memory outside linear memory");
  }
  memcpy(memory->data + address, value->data, value->size);
}

void sandpool_wasm_take_result(wasm_rt_memory_t* memory, uint64_t packed, sandpool_value* result) {
  uint32_t address = (uint32_t)packed;
  uint32_t size = (uint32_t)(packed >> 32);
  if ((uint64_t)address + size > memory->size) {
    sandpool_wasm_abort("result", "string or bytes result lies outside linear memory");
  }
  result->buf.data = memory->data + address;
  result->buf.size = size;
}

sandpool_value sandpool_wasm_host_call(const char* name, const sandpool_value* args,
                                       uint32_t arg_count, sandpool_type result_type) {
  sandpool_value result;
  memset(&result, 0, sizeof result);
  if (sandpool_host_call(name, args, arg_count, &result) != 0) {
    sandpool_wasm_abort("import", sandpool_host_error());
  }
  if (result.type != result_type)
    sandpool_wasm_abort("import", "host function returned another type");
  return result;
}

void sandpool_wasm_import_buffer(wasm_rt_memory_t* memory, uint32_t address, uint32_t size,
                                 sandpool_value* arg) {
  if ((uint64_t)address + size > memory->size) wasm_rt_trap(WASM_RT_TRAP_OOB);
  arg->buf.data = memory->data + address;
  arg->buf.size = size;
}

uint64_t sandpool_wasm_return_buffer(wasm_rt_memory_t* memory, const sandpool_value* result,
                                     uint32_t (*allocate)(uint32_t size)) {
  /* The result lies in the host-call buffer, which the allocator may reuse
   * (it can print, and prints are host calls): copy it out first. */
  const uint32_t size = result->buf.size;
  uint8_t* held = malloc(size ? size : 1);
  if (!held) sandpool_wasm_abort("import", "no guest memory to hold a host function's result");
  memcpy(held, result->buf.data, size);
  const uint32_t address = allocate(size);
  if ((uint64_t)address + size > memory->size) {
    free(held);
    sandpool_wasm_abort("import", "sandpool_alloc returned memory outside linear memory");
  }
  memcpy(memory->data + address, held, size);
  free(held);
  return address | (uint64_t)size << 32;
}
