// Ahead-of-time translation of a wasm32-wasi module into a sandpool guest
// ELF: the module is parsed and its imports and exports checked (module.h,
// glue_writer.h) before any tool runs; then wasm2c and the C compiler run as
// child processes in a private temporary folder, each under limits on CPU
// time, wall time, address space and file size. Nothing here runs inside the
// calling process's address space but the parsing.
//
// Thread-safe: every call works in its own folder. The caller bounds how many
// run at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vm/error.h"

namespace sandpool::wasm {

// Where the tools and the guest SDK are (docs/wasm.md, "The Wasm SDK").
struct Toolchain {
  std::string wasm2c;
  std::string cc;
  std::string compiler_include;           // the compiler's freestanding headers
  std::vector<std::string> include_dirs;  // guest SDK, its libc, the Wasm bridge
  std::vector<std::string> libraries;     // bridge runtime, SDK runtime
  std::string linker_script;
};

// The toolchain whose guest SDK is the folder `sdk_dir`: include/ (the SDK's
// headers and libc), wasm-include/ (the bridge's and wasm2c's), lib/ (the
// bridge and SDK runtimes) and guest.ld. The tools (wasm2c, the C compiler
// and its headers) are the ones the build found on this system.
Toolchain toolchainFromSdk(const std::string& sdk_dir);

// The SDK folder next to the running program, <bin>/../share/sandpool/wasm-sdk,
// where `cmake --install` puts it; the build tree's when there is none.
std::string defaultSdkDir();

// The toolchain of defaultSdkDir().
const Toolchain& defaultToolchain();

// kInternal naming the first file or folder of `toolchain` that is missing
// or a tool that is not executable; checked when a server starts.
vm::Expected<void> checkToolchain(const Toolchain& toolchain);

struct TranslationLimits {
  uint64_t max_module_size = 16ull << 20;
  std::chrono::seconds max_time{120};     // wall time of each tool
  uint64_t max_memory = 4ull << 30;       // address space of each tool process
  uint64_t max_file_size = 256ull << 20;  // any file a tool writes
  uint64_t max_image_size = 64ull << 20;  // the guest ELF
};

// The guest ELF for `module`, or kInvalidGuest (the module was refused,
// naming why) or kLimitExceeded (a tool ran past a limit) or kInternal.
vm::Expected<std::vector<uint8_t>> translateModule(std::span<const uint8_t> module,
                                                   const Toolchain& toolchain,
                                                   const TranslationLimits& limits);

}  // namespace sandpool::wasm

namespace sandpool::wasm {

// What an uploaded guest becomes: a Wasm module (by its magic) is
// translated; anything else is returned as it is, for the ELF checks. The
// one call that upload paths (server, sandpool-run) make.
vm::Expected<std::vector<uint8_t>> guestImageFromUpload(
    std::vector<uint8_t> bytes, const Toolchain& toolchain = defaultToolchain(),
    const TranslationLimits& limits = {});

}  // namespace sandpool::wasm
