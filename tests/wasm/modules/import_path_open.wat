;; A WASI preview 1 function outside sandpool's subset uploads and answers
;; with an errno: path_open on a descriptor that does not exist is EBADF.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sched_yield" (func $sched_yield (result i32)))
  (memory (export "memory") 1)
  (func (export "open_errno") (result i32)
    (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 0)
      (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 64)))
  (func (export "yield_errno") (result i32) (call $sched_yield)))
