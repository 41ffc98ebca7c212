/* hello: prints through the host and returns a greeting. */
#include <sandpool/guest.h>
#include <stdio.h>

static char greeting[128];

static void hello(const sandpool_value* args, uint32_t arg_count, sandpool_value* result) {
  (void)arg_count;
  const sandpool_buffer* name = &args[0].buf;
  printf("hello from the guest, %.*s!\n", (int)name->size, (const char*)name->data);
  int n =
      snprintf(greeting, sizeof greeting, "Hello, %.*s!", (int)name->size, (const char*)name->data);
  result->buf.data = (const uint8_t*)greeting;
  result->buf.size = n < (int)sizeof greeting ? (uint32_t)n : sizeof greeting - 1;
}

void sandpool_main(void) {
  static const sandpool_type params[] = {SANDPOOL_TYPE_STRING};
  sandpool_export("hello", hello, SANDPOOL_TYPE_STRING, 1, params);
}
