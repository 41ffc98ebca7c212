#include "wasm/module.h"

#include <cstring>

#include <fmt/format.h>

namespace sandpool::wasm {
namespace {

constexpr uint8_t kMagic[] = {0x00, 0x61, 0x73, 0x6d};
constexpr uint8_t kVersion1[] = {0x01, 0x00, 0x00, 0x00};
// Bounds on counts, so a hostile count cannot make the parser allocate much.
constexpr uint32_t kMaxCount = 1'000'000;

enum SectionId : uint8_t { kType = 1, kImport = 2, kFunction = 3, kExport = 7 };

// A cursor over one range of the module; the first failure latches and
// names what was being read and where.
class Reader {
 public:
  Reader(std::span<const uint8_t> bytes, size_t base) : bytes_(bytes), base_(base) {}

  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  bool atEnd() const { return pos_ == bytes_.size(); }
  size_t offset() const { return base_ + pos_; }

  uint8_t byte(const char* what) {
    if (!need(1, what)) return 0;
    return bytes_[pos_++];
  }

  uint32_t u32(const char* what) {
    uint64_t value = 0;
    for (int shift = 0; shift < 35; shift += 7) {
      const uint8_t b = byte(what);
      if (failed()) return 0;
      value |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        if (value > UINT32_MAX) fail(what, "LEB128 value exceeds 32 bits");
        return uint32_t(value);
      }
    }
    fail(what, "LEB128 value longer than 5 bytes");
    return 0;
  }

  uint32_t count(const char* what) {
    const uint32_t n = u32(what);
    if (n > kMaxCount) fail(what, fmt::format("count {} exceeds {}", n, kMaxCount));
    return failed() ? 0 : n;
  }

  std::span<const uint8_t> take(size_t size, const char* what) {
    if (!need(size, what)) return {};
    auto part = bytes_.subspan(pos_, size);
    pos_ += size;
    return part;
  }

  std::string name(const char* what) {
    auto bytes = take(u32(what), what);
    return std::string(bytes.begin(), bytes.end());
  }

  ValType valType(const char* what) {
    const uint8_t b = byte(what);
    if (!failed() && b != 0x7f && b != 0x7e && b != 0x7d && b != 0x7c) {
      fail(what, fmt::format("value type 0x{} is not i32, i64, f32 or f64", hex(b)));
    }
    return ValType(b);
  }

  void fail(const char* what, const std::string& why) {
    if (error_.empty()) error_ = fmt::format("{} at offset {}: {}", what, offset(), why);
  }

 private:
  static std::string hex(uint8_t b) {
    const char digits[] = "0123456789abcdef";
    return {digits[b >> 4], digits[b & 15]};
  }
  bool need(size_t size, const char* what) {
    if (failed()) return false;
    if (size > bytes_.size() - pos_) {
      fail(what, fmt::format("needs {} bytes, {} left", size, bytes_.size() - pos_));
      return false;
    }
    return true;
  }

  std::span<const uint8_t> bytes_;
  size_t base_;
  size_t pos_ = 0;
  std::string error_;
};

void readTypes(Reader& r, Module& module) {
  const uint32_t n = r.count("type count");
  for (uint32_t i = 0; i < n && !r.failed(); i++) {
    if (r.byte("function type form") != 0x60) r.fail("function type form", "not 0x60 (func)");
    FuncType type;
    const uint32_t params = r.count("parameter count");
    for (uint32_t p = 0; p < params && !r.failed(); p++)
      type.params.push_back(r.valType("parameter type"));
    const uint32_t results = r.count("result count");
    for (uint32_t p = 0; p < results && !r.failed(); p++)
      type.results.push_back(r.valType("result type"));
    module.types.push_back(std::move(type));
  }
}

void skipLimits(Reader& r) {
  const uint8_t flags = r.byte("limits flags");
  r.u32("limits minimum");
  if (flags & 1) r.u32("limits maximum");
}

void readImports(Reader& r, Module& module) {
  const uint32_t n = r.count("import count");
  for (uint32_t i = 0; i < n && !r.failed(); i++) {
    Import import;
    import.module = r.name("import module name");
    import.name = r.name("import name");
    import.kind = ExternKind(r.byte("import kind"));
    switch (import.kind) {
      case ExternKind::kFunction:
        import.type_index = r.u32("import type index");
        if (!r.failed() && import.type_index >= module.types.size()) {
          r.fail("import type index", fmt::format("type {} does not exist", import.type_index));
        }
        module.function_types.push_back(import.type_index);
        break;
      case ExternKind::kTable:
        r.byte("table element type");
        skipLimits(r);
        break;
      case ExternKind::kMemory: skipLimits(r); break;
      case ExternKind::kGlobal:
        r.byte("global type");
        r.byte("global mutability");
        break;
      default: r.fail("import kind", fmt::format("unknown kind {}", int(import.kind)));
    }
    module.imports.push_back(std::move(import));
  }
}

void readFunctions(Reader& r, Module& module) {
  const uint32_t n = r.count("function count");
  for (uint32_t i = 0; i < n && !r.failed(); i++) {
    const uint32_t type = r.u32("function type index");
    if (!r.failed() && type >= module.types.size()) {
      r.fail("function type index", fmt::format("type {} does not exist", type));
    }
    module.function_types.push_back(type);
  }
}

void readExports(Reader& r, Module& module) {
  const uint32_t n = r.count("export count");
  for (uint32_t i = 0; i < n && !r.failed(); i++) {
    Export e;
    e.name = r.name("export name");
    e.kind = ExternKind(r.byte("export kind"));
    e.index = r.u32("export index");
    if (!r.failed() && e.kind == ExternKind::kFunction && e.index >= module.function_types.size()) {
      r.fail("export index", fmt::format("export '{}' names function {} of {}", e.name, e.index,
                                         module.function_types.size()));
    }
    module.exports.push_back(std::move(e));
  }
}

}  // namespace

bool isWasmModule(std::span<const uint8_t> bytes) {
  return bytes.size() >= sizeof kMagic && std::memcmp(bytes.data(), kMagic, sizeof kMagic) == 0;
}

std::string_view valTypeName(ValType type) {
  switch (type) {
    case ValType::kI32: return "i32";
    case ValType::kI64: return "i64";
    case ValType::kF32: return "f32";
    case ValType::kF64: return "f64";
  }
  return "?";
}

vm::Expected<Module> parseModule(std::span<const uint8_t> bytes) {
  auto refuse = [](const std::string& why) {
    return vm::makeError(vm::ErrorKind::kInvalidGuest, fmt::format("wasm module: {}", why));
  };
  if (!isWasmModule(bytes)) return refuse("no Wasm magic (\\0asm) at offset 0");
  if (bytes.size() < 8 || std::memcmp(bytes.data() + 4, kVersion1, 4) != 0) {
    return refuse("unsupported binary version (sandpool reads version 1)");
  }
  Module module;
  Reader sections(bytes.subspan(8), 8);
  while (!sections.atEnd() && !sections.failed()) {
    const uint8_t id = sections.byte("section id");
    const uint32_t size = sections.u32("section size");
    const size_t start = sections.offset();
    auto body = sections.take(size, "section body");
    if (sections.failed()) break;
    Reader r(body, start);
    switch (id) {
      case kType: readTypes(r, module); break;
      case kImport: readImports(r, module); break;
      case kFunction: readFunctions(r, module); break;
      case kExport: readExports(r, module); break;
      default: continue;
    }
    if (!r.failed() && !r.atEnd())
      r.fail("section end", fmt::format("section {} has trailing bytes", id));
    if (r.failed()) return refuse(r.error());
  }
  if (sections.failed()) return refuse(sections.error());
  return module;
}

}  // namespace sandpool::wasm
