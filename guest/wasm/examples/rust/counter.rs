//! State set at initialisation and changed by calls, in Rust. The module
//! exports its own `_initialize` (the WASI reactor entry point, which the
//! server runs once at boot, before the snapshot): it runs the linker's
//! constructors, as WASI's reactor start file would, then sets the start
//! value. Every call starts from that value again, because the VM is reset
//! after each call.
#![crate_type = "cdylib"]

use std::sync::atomic::{AtomicI32, Ordering};

static COUNTER: AtomicI32 = AtomicI32::new(0);

extern "C" {
    fn __wasm_call_ctors();
}

#[export_name = "_initialize"]
pub extern "C" fn initialize() {
    unsafe { __wasm_call_ctors() };
    COUNTER.store(40, Ordering::Relaxed);
}

#[export_name = "increment"]
pub extern "C" fn increment() -> i32 {
    COUNTER.fetch_add(1, Ordering::Relaxed) + 1
}
