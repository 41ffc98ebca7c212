;; One export per trap the bridge names, plus memory.grow past the limit.
(module
  (type $void (func))
  (memory (export "memory") 1)
  (table 2 funcref)
  (elem (i32.const 0) $unreachable)
  (func $unreachable (export "unreachable") unreachable)
  (func (export "out_of_bounds") (result i32) (i32.load (i32.const 70000)))
  (func (export "divide_by_zero") (param i32) (result i32) (i32.div_s (i32.const 1) (local.get 0)))
  (func (export "overflow") (result i32) (i32.div_s (i32.const 0x80000000) (i32.const -1)))
  (func $recurse (export "stack_exhaustion") (result i32) (i32.add (call $recurse) (i32.const 1)))
  (func (export "indirect_mismatch") (result i32) (call_indirect (result i32) (i32.const 0)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "spin") (loop $forever (br $forever))))
