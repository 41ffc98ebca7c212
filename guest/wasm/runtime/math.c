/* Rounding for translated modules (math.h says why it is in software).
 * Every value of magnitude 2^52 (2^23 for float) or more is already an
 * integer, as are infinities; NaN passes through. Below that, the integer
 * part fits an int64_t exactly. The sign of zero is kept. */
#include <math.h>
#include <stdint.h>

static int is_integral_or_nan(double x) { return !(__builtin_fabs(x) < 4503599627370496.0); }
static int is_integral_or_nanf(float x) { return !(__builtin_fabsf(x) < 8388608.0f); }

double trunc(double x) {
  if (is_integral_or_nan(x)) return x;
  return __builtin_copysign((double)(int64_t)x, x);
}
float truncf(float x) {
  if (is_integral_or_nanf(x)) return x;
  return __builtin_copysignf((float)(int64_t)x, x);
}
double floor(double x) {
  double t = trunc(x);
  return t > x ? t - 1.0 : t;
}
float floorf(float x) {
  float t = truncf(x);
  return t > x ? t - 1.0f : t;
}
double ceil(double x) {
  double t = trunc(x);
  return __builtin_copysign(t < x ? t + 1.0 : t, x);
}
float ceilf(float x) {
  float t = truncf(x);
  return __builtin_copysignf(t < x ? t + 1.0f : t, x);
}
/* Adding and subtracting 2^52 rounds to the nearest integer, ties to even,
 * in the default rounding mode (the only one a guest runs in). */
double nearbyint(double x) {
  if (is_integral_or_nan(x)) return x;
  volatile double shifted = __builtin_fabs(x) + 4503599627370496.0;
  return __builtin_copysign(shifted - 4503599627370496.0, x);
}
float nearbyintf(float x) {
  if (is_integral_or_nanf(x)) return x;
  volatile float shifted = __builtin_fabsf(x) + 8388608.0f;
  return __builtin_copysignf(shifted - 8388608.0f, x);
}
