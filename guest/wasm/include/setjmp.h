/* Declarations wasm-rt.h needs. The bridge ends a trapping call with a guest
 * abort (the VM is reset after every call), so nothing unwinds and these are
 * never called. */
#ifndef SANDPOOL_WASM_SETJMP_H
#define SANDPOOL_WASM_SETJMP_H
typedef long jmp_buf[8];
int setjmp(jmp_buf env);
_Noreturn void longjmp(jmp_buf env, int value);
#endif
