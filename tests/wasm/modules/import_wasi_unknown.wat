;; Refused at upload: a name from WASI's module that WASI preview 1 does not have.
(module (import "wasi_snapshot_preview1" "get_secret" (func (result i32))))
