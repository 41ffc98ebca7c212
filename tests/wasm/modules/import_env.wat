;; Refused at upload: an import from neither WASI nor sandpool.
(module (import "env" "getenv_secret" (func (result i32))))
