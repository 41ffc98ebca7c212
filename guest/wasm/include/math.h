/* The floating-point functions wasm2c's output calls. Baseline x86-64 has no
 * SSE4.1 rounding instruction, so rounding is done in software (math.c);
 * sqrt and fabs are single SSE2 instructions. */
#ifndef SANDPOOL_WASM_MATH_H
#define SANDPOOL_WASM_MATH_H
#define INFINITY __builtin_inff()
#define NAN __builtin_nanf("")
#define isnan(x) __builtin_isnan(x)
#define signbit(x) __builtin_signbit(x)
static inline double sqrt(double x) { return __builtin_sqrt(x); }
static inline float sqrtf(float x) { return __builtin_sqrtf(x); }
static inline double fabs(double x) { return __builtin_fabs(x); }
static inline float fabsf(float x) { return __builtin_fabsf(x); }
double floor(double x);
float floorf(float x);
double ceil(double x);
float ceilf(float x);
double trunc(double x);
float truncf(float x);
double nearbyint(double x);
float nearbyintf(float x);
#endif
