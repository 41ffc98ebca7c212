/* wasm2c's runtime (wasm-rt.h) on the guest SDK: traps end the call, linear
 * memory is reserved once at the top of the guest heap and grows in place,
 * function types are interned so call_indirect compares indices. Bounds are
 * checked by the translated code itself (WASM_RT_MEMCHECK_SIGNAL_HANDLER=0),
 * and call depth is counted (WASM_RT_MAX_CALL_STACK_DEPTH). */
#include <sandpool/wasm_bridge.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum {
  kWasmPageSize = 65536,
  kMaxFuncTypes = 1024,
  kMaxTypeValues = 64,
  /* Heap left to malloc (tables, the SDK) when a memory reserves the rest. */
  kHeapKeptForMalloc = 4 << 20,
};

uint32_t wasm_rt_call_stack_depth;
static bool initialized;

void wasm_rt_init(void) { initialized = true; }
bool wasm_rt_is_initialized(void) { return initialized; }
void wasm_rt_free(void) {}

const char* wasm_rt_strerror(wasm_rt_trap_t trap) {
  switch (trap) {
    case WASM_RT_TRAP_NONE: return "none";
    case WASM_RT_TRAP_OOB: return "out of bounds memory or table access";
    case WASM_RT_TRAP_INT_OVERFLOW: return "integer overflow";
    case WASM_RT_TRAP_DIV_BY_ZERO: return "integer divide by zero";
    case WASM_RT_TRAP_INVALID_CONVERSION: return "invalid conversion to integer";
    case WASM_RT_TRAP_UNREACHABLE: return "unreachable executed";
    case WASM_RT_TRAP_CALL_INDIRECT: return "indirect call type mismatch";
    case WASM_RT_TRAP_UNCAUGHT_EXCEPTION: return "uncaught exception";
    case WASM_RT_TRAP_EXHAUSTION: return "call stack exhausted";
  }
  return "unknown trap";
}

void wasm_rt_trap(wasm_rt_trap_t trap) { sandpool_wasm_abort("trap", wasm_rt_strerror(trap)); }

typedef struct func_type {
  uint32_t params;
  uint32_t results;
  wasm_rt_type_t types[kMaxTypeValues];
} func_type;

static func_type func_types[kMaxFuncTypes];
static uint32_t func_type_count;

uint32_t wasm_rt_register_func_type(uint32_t params, uint32_t results, ...) {
  if (params + results > kMaxTypeValues)
    sandpool_wasm_abort("runtime", "function type has too many values");
  func_type wanted;
  memset(&wanted, 0, sizeof wanted);
  wanted.params = params;
  wanted.results = results;
  va_list values;
  va_start(values, results);
  for (uint32_t i = 0; i < params + results; i++)
    wanted.types[i] = (wasm_rt_type_t)va_arg(values, int);
  va_end(values);
  for (uint32_t i = 0; i < func_type_count; i++) {
    if (memcmp(&func_types[i], &wanted, sizeof wanted) == 0) return i + 1;
  }
  if (func_type_count == kMaxFuncTypes) sandpool_wasm_abort("runtime", "too many function types");
  func_types[func_type_count++] = wanted;
  return func_type_count;
}

void wasm_rt_allocate_memory(wasm_rt_memory_t* memory, uint32_t initial_pages, uint32_t max_pages) {
  size_t reserved = 0;
  uint8_t* data =
      sandpool_heap_reserve((size_t)max_pages * kWasmPageSize, kHeapKeptForMalloc, &reserved);
  uint32_t reserved_pages = (uint32_t)(reserved / kWasmPageSize);
  if (reserved_pages < initial_pages)
    sandpool_wasm_abort("runtime", "initial linear memory exceeds guest memory");
  memory->data = data;
  memory->pages = initial_pages;
  memory->max_pages = reserved_pages;
  memory->size = initial_pages * kWasmPageSize;
}

uint32_t wasm_rt_grow_memory(wasm_rt_memory_t* memory, uint32_t delta) {
  uint32_t old_pages = memory->pages;
  if (delta > memory->max_pages - old_pages) return (uint32_t)-1;
  memory->pages = old_pages + delta;
  memory->size = memory->pages * kWasmPageSize;
  return old_pages;
}

void wasm_rt_free_memory(wasm_rt_memory_t* memory) { (void)memory; }

#define DEFINE_TABLE(kind, element_type)                                                          \
  void wasm_rt_allocate_##kind##_table(wasm_rt_##kind##_table_t* table, uint32_t elements,        \
                                       uint32_t max_elements) {                                   \
    table->data = calloc(elements ? elements : 1, sizeof(element_type));                          \
    if (!table->data) sandpool_wasm_abort("runtime", "table exceeds guest memory");               \
    table->size = elements;                                                                       \
    table->max_size = max_elements;                                                               \
  }                                                                                               \
  void wasm_rt_free_##kind##_table(wasm_rt_##kind##_table_t* table) { free(table->data); }        \
  uint32_t wasm_rt_grow_##kind##_table(wasm_rt_##kind##_table_t* table, uint32_t delta,           \
                                       element_type init) {                                       \
    uint32_t old_size = table->size;                                                              \
    if (delta > table->max_size - old_size) return (uint32_t)-1;                                  \
    element_type* data = realloc(table->data, ((size_t)old_size + delta) * sizeof(element_type)); \
    if (!data) return (uint32_t)-1;                                                               \
    for (uint32_t i = old_size; i < old_size + delta; i++) data[i] = init;                        \
    table->data = data;                                                                           \
    table->size = old_size + delta;                                                               \
    return old_size;                                                                              \
  }
DEFINE_TABLE(funcref, wasm_rt_funcref_t)
DEFINE_TABLE(externref, wasm_rt_externref_t)
