/* sandpool guest libc: formatted output. printf() writes to the call's
 * captured output through the host's print function. Supported conversions:
 * %d %i %u %x %X %o %c %s %p %f %% with flags '-' '0', width, precision (or *) and
 * the length modifiers l, ll, z. */
#ifndef SANDPOOL_LIBC_STDIO_H
#define SANDPOOL_LIBC_STDIO_H
#include <stdarg.h>
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
int vsnprintf(char* buf, size_t size, const char* format, va_list args);
int snprintf(char* buf, size_t size, const char* format, ...) __attribute__((format(printf, 3, 4)));
int printf(const char* format, ...) __attribute__((format(printf, 1, 2)));
int puts(const char* text);
#ifdef __cplusplus
}
#endif
#endif
