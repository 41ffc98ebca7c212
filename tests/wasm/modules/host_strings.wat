;; Strings through "sandpool" imports (docs/wasm.md): an import whose name
;; declares its signature takes (address, size) for a string and returns a
;; string as address | size << 32 in memory its sandpool_alloc gives.
(module
  (import "sandpool" "kv_get(string)->string" (func $kv_get (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "sandpool_alloc") (param $size i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $size)))
    (local.get $at))
  (func (export "lookup(string)->string") (param i32 i32) (result i64)
    (call $kv_get (local.get 0) (local.get 1)))
  ;; An address past the end of linear memory.
  (func (export "lookup_outside()->string") (result i64)
    (call $kv_get (i32.const 0x7fff0000) (i32.const 4)))
  ;; An address inside it whose size runs past its end.
  (func (export "lookup_overlong()->string") (result i64)
    (call $kv_get (i32.const 100) (i32.const 0xffffffff))))
