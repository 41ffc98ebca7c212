// Turns a parsed module into the C that makes wasm2c's translation an SDK
// guest: sandpool_main() instantiating the module, one SDK export per
// callable Wasm export, the "sandpool" imports as host calls and stubs for
// the WASI functions the bridge does not implement. This is also where
// imports and export signatures are checked, so a refused module never
// reaches a compiler. docs/wasm.md is the user-facing form of these rules.
#pragma once

#include <string>
#include <string_view>

#include "vm/error.h"
#include "wasm/module.h"

namespace sandpool::wasm {

// The name wasm2c is given with -n; the glue's symbols derive from it.
inline constexpr std::string_view kModuleSymbol = "module";

// wasm2c 1.0.32's name mangling: "Z_" then each byte, kept if it is an ASCII
// letter or digit other than 'Z' or '_', else "Z" and two hex digits.
std::string mangle(std::string_view name);

// The glue C for `module`, or kInvalidGuest naming the refused import or
// export.
vm::Expected<std::string> writeGlue(const Module& module);

}  // namespace sandpool::wasm
