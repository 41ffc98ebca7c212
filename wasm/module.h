// What sandpool needs to know about a Wasm module before anything compiles
// it: its function types, imports and exports, read from the binary with
// every length and index checked against the bytes that hold it. A module
// that parses here is then validated fully by wasm2c (in a child process).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vm/error.h"

namespace sandpool::wasm {

enum class ValType : uint8_t { kI32 = 0x7f, kI64 = 0x7e, kF32 = 0x7d, kF64 = 0x7c };

struct FuncType {
  std::vector<ValType> params;
  std::vector<ValType> results;
  bool operator==(const FuncType&) const = default;
};

enum class ExternKind : uint8_t { kFunction = 0, kTable = 1, kMemory = 2, kGlobal = 3 };

struct Import {
  std::string module;
  std::string name;
  ExternKind kind = ExternKind::kFunction;
  uint32_t type_index = 0;  // functions only
};

struct Export {
  std::string name;
  ExternKind kind = ExternKind::kFunction;
  uint32_t index = 0;  // in the function (or other kind's) index space
};

struct Module {
  std::vector<FuncType> types;
  std::vector<Import> imports;
  std::vector<uint32_t> function_types;  // type index of each function, imports first
  std::vector<Export> exports;

  // The type of a function by its index in the function index space.
  const FuncType& functionType(uint32_t function_index) const {
    return types[function_types[function_index]];
  }
};

// True when `bytes` start with the Wasm magic ("\0asm").
bool isWasmModule(std::span<const uint8_t> bytes);

// Parses the sections sandpool reads (type, import, function, export) and
// skips the others by their declared size. Errors are kInvalidGuest naming
// the section and offset.
vm::Expected<Module> parseModule(std::span<const uint8_t> bytes);

std::string_view valTypeName(ValType type);

}  // namespace sandpool::wasm
