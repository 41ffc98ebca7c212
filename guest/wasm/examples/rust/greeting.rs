//! A Wasm guest in Rust: takes a name, prints through WASI and returns a
//! greeting, with strings crossing as docs/wasm.md says.
#![crate_type = "cdylib"]

use std::alloc::{alloc, Layout};
use std::slice;

#[export_name = "sandpool_alloc"]
pub extern "C" fn sandpool_alloc(size: u32) -> *mut u8 {
    unsafe { alloc(Layout::from_size_align(size.max(1) as usize, 1).unwrap()) }
}

#[export_name = "greet(string)->string"]
pub extern "C" fn greet(name: *const u8, size: u32) -> u64 {
    let name = unsafe { slice::from_raw_parts(name, size as usize) };
    let name = String::from_utf8_lossy(name);
    println!("greeting {} from Rust", name);
    let text = format!("Hello, {}, from Rust!", name).into_boxed_str();
    let result = (text.as_ptr() as u64) | ((text.len() as u64) << 32);
    Box::leak(text);
    result
}
