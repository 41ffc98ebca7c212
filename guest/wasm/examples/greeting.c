/* A Wasm guest in C: takes a name, prints through WASI and returns a
 * greeting. Strings cross as docs/wasm.md says: the host copies an argument
 * into memory from sandpool_alloc and passes (address, size); a string
 * result is returned as address | size << 32. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((export_name("sandpool_alloc"))) void* sandpool_alloc(uint32_t size) {
  return malloc(size);
}

static uint64_t string_result(const char* text, uint32_t size) {
  return (uint64_t)(uintptr_t)text | (uint64_t)size << 32;
}

__attribute__((export_name("greet(string)->string"))) uint64_t greet(const char* name,
                                                                     uint32_t size) {
  static const char hello[] = "Hello, ";
  char* text = malloc(sizeof hello - 1 + size + 1);
  memcpy(text, hello, sizeof hello - 1);
  memcpy(text + sizeof hello - 1, name, size);
  text[sizeof hello - 1 + size] = '!';
  printf("greeting %.*s\n", (int)size, name);
  return string_result(text, (uint32_t)(sizeof hello + size));
}

__attribute__((export_name("add"))) int32_t add(int32_t a, int32_t b) { return a + b; }

__attribute__((export_name("nothing"))) void nothing(void) {}

/* 8 bytes from WASI random_get, fresh for every call. */
__attribute__((export_name("random"))) uint64_t random_word(void) {
  uint64_t word = 0;
  arc4random_buf(&word, sizeof word);
  return word;
}
