/* counter: state in global memory, to show that every call starts from the
 * snapshot. `increment` always returns 1 (snapshot value 0, plus one);
 * `remember` stores a secret that `recall` can never see in a later call. */
#include <sandpool/guest.h>
#include <string.h>

static uint64_t counter;
static char secret[256];
static uint32_t secret_size;

static void increment(const sandpool_value* args, uint32_t n, sandpool_value* result) {
  (void)args, (void)n;
  result->u64 = ++counter;
}

static void remember(const sandpool_value* args, uint32_t n, sandpool_value* result) {
  (void)n, (void)result;
  secret_size = args[0].buf.size < sizeof secret ? args[0].buf.size : sizeof secret;
  memcpy(secret, args[0].buf.data, secret_size);
}

static void recall(const sandpool_value* args, uint32_t n, sandpool_value* result) {
  (void)args, (void)n;
  result->buf.data = (const uint8_t*)secret;
  result->buf.size = secret_size;
}

/* Dirties `pages` pages of the heap: what benchmarks use to size a reset. */
static void touch_pages(const sandpool_value* args, uint32_t n, sandpool_value* result) {
  (void)n, (void)result;
  const sandpool_boot_info* boot = sandpool_boot();
  uint8_t* area = (uint8_t*)boot->heap_start;
  uint64_t limit = (boot->heap_end - boot->heap_start) / SANDPOOL_PAGE_SIZE;
  uint32_t pages = args[0].u32 < limit ? args[0].u32 : (uint32_t)limit;
  for (uint32_t i = 0; i < pages; i++) area[(uint64_t)i * SANDPOOL_PAGE_SIZE] = 1;
}

void sandpool_main(void) {
  static const sandpool_type one_string[] = {SANDPOOL_TYPE_STRING};
  static const sandpool_type one_u32[] = {SANDPOOL_TYPE_U32};
  sandpool_export("increment", increment, SANDPOOL_TYPE_U64, 0, 0);
  sandpool_export("remember", remember, SANDPOOL_TYPE_VOID, 1, one_string);
  sandpool_export("recall", recall, SANDPOOL_TYPE_STRING, 0, 0);
  sandpool_export("touch_pages", touch_pages, SANDPOOL_TYPE_VOID, 1, one_u32);
}
