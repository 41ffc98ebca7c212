;; A "sandpool" import is a host call; fd_close, outside the WASI subset, is EBADF.
(module
  (import "sandpool" "twice" (func $twice (param i64) (result i64)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (func (export "call_twice") (param i64) (result i64) (call $twice (local.get 0)))
  (func (export "close_errno") (result i32) (call $fd_close (i32.const 3))))
