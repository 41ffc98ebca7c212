/* assert() for translated modules: a failed assertion aborts the guest. */
#ifndef SANDPOOL_WASM_ASSERT_H
#define SANDPOOL_WASM_ASSERT_H
_Noreturn void abort(void);
#define assert(condition) ((condition) ? (void)0 : abort())
#endif
