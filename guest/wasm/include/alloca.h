/* alloca() for translated modules. */
#ifndef SANDPOOL_WASM_ALLOCA_H
#define SANDPOOL_WASM_ALLOCA_H
#define alloca __builtin_alloca
#endif
