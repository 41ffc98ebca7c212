/* Formatted output for guests: vsnprintf and a printf that goes to the
 * call's captured output through the host's print function. */
#include <sandpool/guest.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct sink {
  char* buf;
  size_t size;
  size_t len; /* characters produced, even past size */
} sink;

static void emit(sink* s, char c) {
  if (s->len + 1 < s->size) s->buf[s->len] = c;
  s->len++;
}

static void emit_padded(sink* s, const char* text, size_t n, int width, int left, char pad) {
  int fill = width > (int)n ? width - (int)n : 0;
  if (!left)
    while (fill-- > 0) emit(s, pad);
  for (size_t i = 0; i < n; i++) emit(s, text[i]);
  if (left)
    while (fill-- > 0) emit(s, ' ');
}

static size_t format_unsigned(char* out, unsigned long long v, unsigned base, int upper) {
  const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  char tmp[32];
  size_t n = 0;
  do {
    tmp[n++] = digits[v % base];
    v /= base;
  } while (v);
  for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  return n;
}

static size_t format_double(char* out, double v, int precision) {
  size_t n = 0;
  if (v != v) {
    memcpy(out, "nan", 3);
    return 3;
  }
  if (v < 0) {
    out[n++] = '-';
    v = -v;
  }
  if (v > 1e18) {
    memcpy(out + n, "inf", 3);
    return n + 3;
  }
  double scale = 1;
  for (int i = 0; i < precision; i++) scale *= 10;
  unsigned long long whole = (unsigned long long)v;
  unsigned long long frac = (unsigned long long)((v - (double)whole) * scale + 0.5);
  if (frac >= (unsigned long long)scale) {
    whole++;
    frac -= (unsigned long long)scale;
  }
  n += format_unsigned(out + n, whole, 10, 0);
  if (precision > 0) {
    out[n++] = '.';
    char digits[32];
    size_t d = format_unsigned(digits, frac, 10, 0);
    for (size_t i = d; i < (size_t)precision; i++) out[n++] = '0';
    memcpy(out + n, digits, d);
    n += d;
  }
  return n;
}

int vsnprintf(char* buf, size_t size, const char* f, va_list ap) {
  sink s = {buf, size, 0};
  for (; *f; f++) {
    if (*f != '%') {
      emit(&s, *f);
      continue;
    }
    f++;
    int left = 0;
    char pad = ' ';
    for (;; f++) {
      if (*f == '-')
        left = 1;
      else if (*f == '0')
        pad = '0';
      else
        break;
    }
    int width = 0;
    if (*f == '*') {
      width = va_arg(ap, int);
      f++;
    }
    while (*f >= '0' && *f <= '9') width = width * 10 + (*f++ - '0');
    int precision = -1;
    if (*f == '.') {
      precision = 0;
      f++;
      if (*f == '*') {
        precision = va_arg(ap, int);
        f++;
      }
      while (*f >= '0' && *f <= '9') precision = precision * 10 + (*f++ - '0');
    }
    int longs = 0;
    while (*f == 'l' || *f == 'z') {
      longs += *f == 'z' ? 2 : 1;
      f++;
    }
    char tmp[64];
    size_t n = 0;
    switch (*f) {
      case 'd':
      case 'i': {
        long long v = longs ? va_arg(ap, long long) : va_arg(ap, int);
        unsigned long long magnitude = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
        if (v < 0) tmp[n++] = '-';
        n += format_unsigned(tmp + n, magnitude, 10, 0);
        emit_padded(&s, tmp, n, width, left, pad);
        break;
      }
      case 'u':
      case 'x':
      case 'X':
      case 'o': {
        unsigned long long v = longs ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned);
        unsigned base = *f == 'u' ? 10 : *f == 'o' ? 8 : 16;
        n = format_unsigned(tmp, v, base, *f == 'X');
        emit_padded(&s, tmp, n, width, left, pad);
        break;
      }
      case 'p': {
        tmp[0] = '0';
        tmp[1] = 'x';
        n = 2 + format_unsigned(tmp + 2, (unsigned long long)(uintptr_t)va_arg(ap, void*), 16, 0);
        emit_padded(&s, tmp, n, width, left, ' ');
        break;
      }
      case 'c':
        tmp[0] = (char)va_arg(ap, int);
        emit_padded(&s, tmp, 1, width, left, ' ');
        break;
      case 's': {
        const char* str = va_arg(ap, const char*);
        if (!str) str = "(null)";
        size_t len = precision >= 0 ? strnlen(str, (size_t)precision) : strlen(str);
        emit_padded(&s, str, len, width, left, ' ');
        break;
      }
      case 'f':
        n = format_double(tmp, va_arg(ap, double),
                          precision < 0    ? 6
                          : precision > 18 ? 18
                                           : precision);
        emit_padded(&s, tmp, n, width, left, pad);
        break;
      case '%': emit(&s, '%'); break;
      default:
        emit(&s, '%');
        if (*f)
          emit(&s, *f);
        else
          f--;
        break;
    }
  }
  if (size) buf[s.len < size ? s.len : size - 1] = 0;
  return (int)s.len;
}

int snprintf(char* buf, size_t size, const char* format, ...) {
  va_list ap;
  va_start(ap, format);
  int n = vsnprintf(buf, size, format, ap);
  va_end(ap);
  return n;
}

int printf(const char* format, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, format);
  int n = vsnprintf(buf, sizeof buf, format, ap);
  va_end(ap);
  sandpool_print_n(buf, n < (int)sizeof buf ? (size_t)n : sizeof buf - 1);
  return n;
}

int puts(const char* text) {
  sandpool_print(text);
  sandpool_print_n("\n", 1);
  return 0;
}
