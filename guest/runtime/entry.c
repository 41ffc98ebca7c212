/* Guest entry, export registry, call dispatcher and host calls.
 *
 * _start runs once: CPU tables, heap, C++ constructors, sandpool_main(), the
 * export table, then READY. The host snapshots the guest at READY; every call
 * resumes from there into dispatch_forever(), which serves exactly one call
 * before the host resets the VM to the snapshot again. */
#include <sandpool/guest.h>
#include <string.h>

#include "runtime.h"

typedef struct export_entry {
  const char* name;
  sandpool_function function;
  sandpool_type result;
  uint32_t param_count;
  sandpool_type params[SANDPOOL_MAX_PARAMS];
} export_entry;

static const sandpool_boot_info* boot_info;
static export_entry exports[SANDPOOL_MAX_EXPORTS];
static uint32_t export_count;
static const uint8_t* call_entropy;
static int call_failed;
static char call_error[512];
static char host_error[256];

extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);

SANDPOOL_NORETURN void sandpool_abort_with(uint32_t code, const char* message, uint64_t size) {
  __asm__ volatile("outl %%eax, %%dx"
                   :
                   : "a"(code), "d"(SANDPOOL_PORT_ABORT), "S"(message), "D"(size)
                   : "memory");
  for (;;) __asm__ volatile("hlt");
}

SANDPOOL_NORETURN void sandpool_abort(const char* message) {
  sandpool_abort_with(SANDPOOL_ABORT_EXPLICIT, message, strlen(message));
}

SANDPOOL_NORETURN void abort(void) { sandpool_abort("abort() called"); }

const sandpool_boot_info* sandpool_boot(void) { return boot_info; }
const uint8_t* sandpool_call_entropy(void) { return call_entropy; }
void sandpool_fail(const char* message) {
  /* Copied: the message may live in the failing function's stack frame. */
  strncpy(call_error, message ? message : "failed", sizeof call_error - 1);
  call_failed = 1;
}
const char* sandpool_host_error(void) { return host_error; }

void sandpool_export(const char* name, sandpool_function function, sandpool_type result,
                     uint32_t param_count, const sandpool_type* param_types) {
  if (export_count == SANDPOOL_MAX_EXPORTS) sandpool_abort("sandpool_export: too many exports");
  if (param_count > SANDPOOL_MAX_PARAMS) sandpool_abort("sandpool_export: too many parameters");
  size_t name_size = strlen(name);
  if (name_size == 0 || name_size > SANDPOOL_MAX_NAME) sandpool_abort("sandpool_export: bad name");
  export_entry* e = &exports[export_count++];
  e->name = name;
  e->function = function;
  e->result = result;
  e->param_count = param_count;
  for (uint32_t i = 0; i < param_count; i++) e->params[i] = param_types[i];
}

/* A bounded writer over a guest buffer; `overflow` latches. */
typedef struct writer {
  uint8_t* data;
  uint64_t size;
  uint64_t used;
  int overflow;
} writer;

static void put(writer* w, const void* bytes, uint64_t n) {
  if (w->overflow || n > w->size - w->used) {
    w->overflow = 1;
    return;
  }
  memcpy(w->data + w->used, bytes, n);
  w->used += n;
}

static void put_u8(writer* w, uint8_t v) { put(w, &v, 1); }

static void put_value(writer* w, const sandpool_value* v) {
  put_u8(w, (uint8_t)v->type);
  switch (v->type) {
    case SANDPOOL_TYPE_VOID: break;
    case SANDPOOL_TYPE_I32:
    case SANDPOOL_TYPE_U32:
    case SANDPOOL_TYPE_F32: put(w, &v->u32, 4); break;
    case SANDPOOL_TYPE_I64:
    case SANDPOOL_TYPE_U64:
    case SANDPOOL_TYPE_F64: put(w, &v->u64, 8); break;
    case SANDPOOL_TYPE_BOOL: put_u8(w, v->b ? 1 : 0); break;
    case SANDPOOL_TYPE_STRING:
    case SANDPOOL_TYPE_BYTES:
      put(w, &v->buf.size, 4);
      put(w, v->buf.data, v->buf.size);
      break;
  }
}

/* A bounded reader; `bad` latches on any overrun or unknown tag. */
typedef struct reader {
  const uint8_t* data;
  uint64_t size;
  uint64_t pos;
  int bad;
} reader;

static const uint8_t* take(reader* r, uint64_t n) {
  if (r->bad || n > r->size - r->pos) {
    r->bad = 1;
    return 0;
  }
  const uint8_t* p = r->data + r->pos;
  r->pos += n;
  return p;
}

static void get_value(reader* r, sandpool_value* v) {
  const uint8_t* tag = take(r, 1);
  if (!tag || *tag > SANDPOOL_TYPE_LAST) {
    r->bad = 1;
    return;
  }
  v->type = (sandpool_type)*tag;
  const uint8_t* p;
  switch (v->type) {
    case SANDPOOL_TYPE_VOID: break;
    case SANDPOOL_TYPE_I32:
    case SANDPOOL_TYPE_U32:
    case SANDPOOL_TYPE_F32:
      if ((p = take(r, 4))) memcpy(&v->u32, p, 4);
      break;
    case SANDPOOL_TYPE_I64:
    case SANDPOOL_TYPE_U64:
    case SANDPOOL_TYPE_F64:
      if ((p = take(r, 8))) memcpy(&v->u64, p, 8);
      break;
    case SANDPOOL_TYPE_BOOL:
      if ((p = take(r, 1))) v->b = *p != 0;
      break;
    case SANDPOOL_TYPE_STRING:
    case SANDPOOL_TYPE_BYTES:
      if ((p = take(r, 4))) {
        memcpy(&v->buf.size, p, 4);
        v->buf.data = take(r, v->buf.size);
      }
      break;
  }
}

static writer output_writer(void) {
  writer w = {(uint8_t*)boot_info->output_addr, boot_info->output_size, 0, 0};
  return w;
}

static uint32_t write_export_table(void) {
  writer w = output_writer();
  sandpool_export_table_header header = {SANDPOOL_EXPORTS_MAGIC, export_count};
  put(&w, &header, sizeof header);
  for (uint32_t i = 0; i < export_count; i++) {
    const export_entry* e = &exports[i];
    put_u8(&w, (uint8_t)e->result);
    put_u8(&w, (uint8_t)e->param_count);
    for (uint32_t p = 0; p < e->param_count; p++) put_u8(&w, (uint8_t)e->params[p]);
    uint16_t name_size = (uint16_t)strlen(e->name);
    put(&w, &name_size, 2);
    put(&w, e->name, name_size);
  }
  if (w.overflow) sandpool_abort("export table does not fit the output buffer");
  return (uint32_t)w.used;
}

static SANDPOOL_NORETURN void bad_request(const char* what) {
  sandpool_abort_with(SANDPOOL_ABORT_BAD_REQUEST, what, strlen(what));
}

static void finish_call(uint32_t status, const sandpool_value* result, const char* message) {
  writer w = output_writer();
  sandpool_result_header header = {SANDPOOL_RESULT_MAGIC, status, 0, 0};
  put(&w, &header, sizeof header);
  if (status == SANDPOOL_STATUS_OK) {
    put_value(&w, result);
  } else {
    put(&w, message, strlen(message));
  }
  if (w.overflow) {
    /* The output buffer's size is the guest's VM setting: the host tells
     * the caller (limitExceeded) rather than the guest failing the call. */
    static const char too_large[] = "result does not fit the output buffer";
    sandpool_abort_with(SANDPOOL_ABORT_RESULT_TOO_LARGE, too_large, sizeof too_large - 1);
  }
  ((sandpool_result_header*)w.data)->size = (uint32_t)(w.used - sizeof header);
  sandpool_out(SANDPOOL_PORT_DONE, (uint32_t)w.used);
}

static void dispatch_one(void) {
  call_failed = 0;
  reader r = {(const uint8_t*)boot_info->input_addr, boot_info->input_size, 0, 0};
  const sandpool_call_header* header = (const sandpool_call_header*)take(&r, sizeof *header);
  if (!header || header->magic != SANDPOOL_CALL_MAGIC) bad_request("bad call header");
  if (header->function_index >= export_count) bad_request("function index out of range");
  const export_entry* e = &exports[header->function_index];
  if (header->arg_count != e->param_count) bad_request("argument count mismatch");
  call_entropy = header->entropy;

  sandpool_value args[SANDPOOL_MAX_PARAMS];
  for (uint32_t i = 0; i < e->param_count; i++) {
    get_value(&r, &args[i]);
    if (r.bad || args[i].type != e->params[i]) bad_request("argument does not match its type");
  }
  sandpool_value result;
  result.type = e->result;
  result.u64 = 0;
  e->function(args, e->param_count, &result);
  result.type = e->result;
  if (call_failed) {
    finish_call(SANDPOOL_STATUS_ERROR, 0, call_error);
  } else {
    finish_call(SANDPOOL_STATUS_OK, &result, 0);
  }
}

int sandpool_host_call(const char* name, const sandpool_value* args, uint32_t arg_count,
                       sandpool_value* result) {
  writer w = {(uint8_t*)boot_info->host_call_addr, boot_info->host_call_size, 0, 0};
  uint32_t name_size = (uint32_t)strlen(name);
  sandpool_host_call_header header = {SANDPOOL_HOST_CALL_MAGIC, name_size, arg_count, 0};
  put(&w, &header, sizeof header);
  put(&w, name, name_size);
  uint64_t args_start = w.used;
  for (uint32_t i = 0; i < arg_count; i++) put_value(&w, &args[i]);
  if (w.overflow) {
    strcpy(host_error, "host call does not fit the host-call buffer");
    return -1;
  }
  ((sandpool_host_call_header*)w.data)->args_size = (uint32_t)(w.used - args_start);
  sandpool_out(SANDPOOL_PORT_HOST_CALL, (uint32_t)w.used);

  reader r = {(const uint8_t*)boot_info->host_call_addr, boot_info->host_call_size, 0, 0};
  const sandpool_result_header* reply = (const sandpool_result_header*)take(&r, sizeof *reply);
  if (!reply || reply->magic != SANDPOOL_RESULT_MAGIC) {
    strcpy(host_error, "malformed host reply");
    return -1;
  }
  if (reply->status != SANDPOOL_STATUS_OK) {
    uint32_t n = reply->size < sizeof host_error - 1 ? reply->size : sizeof host_error - 1;
    const uint8_t* message = take(&r, n);
    memcpy(host_error, message ? message : (const uint8_t*)"", message ? n : 0);
    host_error[message ? n : 0] = 0;
    return -1;
  }
  get_value(&r, result);
  if (r.bad) {
    strcpy(host_error, "malformed host reply value");
    return -1;
  }
  return 0;
}

void sandpool_print_n(const char* text, size_t size) {
  sandpool_value arg;
  arg.type = SANDPOOL_TYPE_STRING;
  arg.buf.data = (const uint8_t*)text;
  arg.buf.size = (uint32_t)size;
  sandpool_value ignored;
  sandpool_host_call(SANDPOOL_HOST_PRINT, &arg, 1, &ignored);
}

void sandpool_print(const char* text) { sandpool_print_n(text, strlen(text)); }

static SANDPOOL_NORETURN void dispatch_forever(void) {
  for (;;) dispatch_one();
}

void sandpool_runtime_start(const sandpool_boot_info* boot) {
  boot_info = boot;
  if (boot->magic != SANDPOOL_BOOT_MAGIC || boot->abi_version != SANDPOOL_ABI_VERSION) {
    sandpool_abort("boot info: unsupported ABI version");
  }
  sandpool_cpu_init();
  sandpool_heap_init(boot);
  call_entropy = boot->entropy;
  for (void (**ctor)(void) = __init_array_start; ctor != __init_array_end; ctor++) (*ctor)();
  sandpool_main();
  uint32_t table_size = write_export_table();
  /* READY passes the resume address in rsi (abi.h). The jump after it ends
   * the emulator's translation block without touching memory, so nothing
   * past the snapshot point runs before the host takes the snapshot. */
  __asm__ volatile(
      "leaq 1f(%%rip), %%rsi\n"
      "outl %%eax, %%dx\n"
      "1: jmp 2f\n"
      "2:\n"
      :
      : "a"(table_size), "d"(SANDPOOL_PORT_READY)
      : "rsi", "memory");
  dispatch_forever();
}

/* The host enters here with rdi = boot info and rsp = top of the stack. */
__attribute__((naked, section(".text.start"))) void _start(void) {
  __asm__ volatile(
      "xor %%ebp, %%ebp\n"
      "and $-16, %%rsp\n"
      "call sandpool_runtime_start\n"
      "ud2\n" ::
          : "memory");
}
