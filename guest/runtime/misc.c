/* The rest of the guest libc. */
#include <stdlib.h>

int abs(int x) { return x < 0 ? -x : x; }

long strtol(const char* s, char** end, int base) {
  while (*s == ' ' || *s == '\t' || *s == '\n') s++;
  int negative = 0;
  if (*s == '-' || *s == '+') negative = *s++ == '-';
  if ((base == 0 || base == 16) && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s += 2;
    base = 16;
  } else if (base == 0) {
    base = s[0] == '0' ? 8 : 10;
  }
  long value = 0;
  for (;; s++) {
    int digit;
    if (*s >= '0' && *s <= '9')
      digit = *s - '0';
    else if (*s >= 'a' && *s <= 'z')
      digit = *s - 'a' + 10;
    else if (*s >= 'A' && *s <= 'Z')
      digit = *s - 'A' + 10;
    else
      break;
    if (digit >= base) break;
    value = value * base + digit;
  }
  if (end) *end = (char*)s;
  return negative ? -value : value;
}
