#include "wasm/glue_writer.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <optional>

#include <fmt/format.h>

#include <sandpool/abi.h>

namespace sandpool::wasm {
namespace {

constexpr std::string_view kWasi = "wasi_snapshot_preview1";
constexpr std::string_view kSandpool = "sandpool";
constexpr std::string_view kAllocator = "sandpool_alloc";
constexpr std::string_view kInitialize = "_initialize";
constexpr uint32_t kWasiEnosys = 52;

using enum ValType;

// The WASI functions guest/wasm/runtime/wasi.c implements, with the types
// they are defined with there.
struct WasiFunction {
  std::string_view name;
  FuncType type;
};
const std::array<WasiFunction, 9>& wasiFunctions() {
  static const std::array<WasiFunction, 9> functions{{
      {"fd_write", {{kI32, kI32, kI32, kI32}, {kI32}}},
      {"fd_fdstat_get", {{kI32, kI32}, {kI32}}},
      {"random_get", {{kI32, kI32}, {kI32}}},
      {"clock_time_get", {{kI32, kI64, kI32}, {kI32}}},
      {"args_sizes_get", {{kI32, kI32}, {kI32}}},
      {"args_get", {{kI32, kI32}, {kI32}}},
      {"environ_sizes_get", {{kI32, kI32}, {kI32}}},
      {"environ_get", {{kI32, kI32}, {kI32}}},
      {"proc_exit", {{kI32}, {}}},
  }};
  return functions;
}

vm::Error refuse(const std::string& why) {
  return vm::makeError(vm::ErrorKind::kInvalidGuest, "wasm module: " + why);
}

std::string describe(const FuncType& type) {
  std::string text = "(";
  for (size_t i = 0; i < type.params.size(); i++)
    text += (i ? ", " : "") + std::string(valTypeName(type.params[i]));
  text += ") -> (";
  for (size_t i = 0; i < type.results.size(); i++)
    text += (i ? ", " : "") + std::string(valTypeName(type.results[i]));
  return text + ")";
}

std::string_view cType(ValType type) {
  switch (type) {
    case kI32: return "u32";
    case kI64: return "u64";
    case kF32: return "f32";
    case kF64: return "f64";
  }
  return "u32";
}

// A parameter or result as sandpool sees it: a Wasm value, or a string or
// bytes passed as pointer + length (params) or packed in an i64 (results).
enum class SandpoolType { kI32, kI64, kF32, kF64, kString, kBytes };

struct Signature {
  std::string name;  // the name callers use
  std::vector<SandpoolType> params;
  std::optional<SandpoolType> result;
};

std::string_view sdkTypeName(SandpoolType type) {
  switch (type) {
    case SandpoolType::kI32: return "SANDPOOL_TYPE_I32";
    case SandpoolType::kI64: return "SANDPOOL_TYPE_I64";
    case SandpoolType::kF32: return "SANDPOOL_TYPE_F32";
    case SandpoolType::kF64: return "SANDPOOL_TYPE_F64";
    case SandpoolType::kString: return "SANDPOOL_TYPE_STRING";
    case SandpoolType::kBytes: return "SANDPOOL_TYPE_BYTES";
  }
  return "SANDPOOL_TYPE_VOID";
}

// The union member of sandpool_value that holds a Wasm value of `type`.
std::string_view member(SandpoolType type) {
  switch (type) {
    case SandpoolType::kI32: return "u32";
    case SandpoolType::kI64: return "u64";
    case SandpoolType::kF32: return "f32";
    case SandpoolType::kF64: return "f64";
    default: return "buf";
  }
}

SandpoolType fromWasm(ValType type) {
  switch (type) {
    case kI32: return SandpoolType::kI32;
    case kI64: return SandpoolType::kI64;
    case kF32: return SandpoolType::kF32;
    case kF64: return SandpoolType::kF64;
  }
  return SandpoolType::kI32;
}

std::optional<SandpoolType> parseTypeName(std::string_view text) {
  if (text == "i32") return SandpoolType::kI32;
  if (text == "i64") return SandpoolType::kI64;
  if (text == "f32") return SandpoolType::kF32;
  if (text == "f64") return SandpoolType::kF64;
  if (text == "string") return SandpoolType::kString;
  if (text == "bytes") return SandpoolType::kBytes;
  return std::nullopt;
}

bool isBuffer(SandpoolType type) {
  return type == SandpoolType::kString || type == SandpoolType::kBytes;
}

ValType toWasm(SandpoolType type) {
  switch (type) {
    case SandpoolType::kI64: return kI64;
    case SandpoolType::kF32: return kF32;
    case SandpoolType::kF64: return kF64;
    default: return kI32;
  }
}

// The Wasm type a declared signature lowers to: a string or bytes parameter
// is (address, size), a string or bytes result address | size << 32.
FuncType lower(const Signature& signature) {
  FuncType type;
  for (SandpoolType p : signature.params) {
    if (isBuffer(p)) {
      type.params.insert(type.params.end(), {kI32, kI32});
    } else {
      type.params.push_back(toWasm(p));
    }
  }
  if (signature.result)
    type.results.push_back(isBuffer(*signature.result) ? kI64 : toWasm(*signature.result));
  return type;
}

// An export's signature: declared in its name ("greet(string)->string"), or
// taken from its Wasm type for plain names. nullopt: a plain export whose
// type sandpool cannot call (several results), which is not listed.
vm::Expected<std::optional<Signature>> signatureOf(const Export& e, const FuncType& type) {
  Signature signature;
  const size_t open = e.name.find('(');
  if (open == std::string::npos) {
    if (type.results.size() > 1) return std::optional<Signature>();
    signature.name = e.name;
    for (ValType p : type.params) signature.params.push_back(fromWasm(p));
    if (!type.results.empty()) signature.result = fromWasm(type.results[0]);
  } else {
    const size_t close = e.name.find(')', open);
    const std::string_view rest =
        close == std::string::npos ? "" : std::string_view(e.name).substr(close + 1);
    if (close == std::string::npos || open == 0 || (!rest.empty() && rest.substr(0, 2) != "->")) {
      return refuse("export '" + e.name +
                    "' is not of the form name(type,...) or name(type,...)->type");
    }
    signature.name = e.name.substr(0, open);
    std::string_view list = std::string_view(e.name).substr(open + 1, close - open - 1);
    while (!list.empty()) {
      const size_t comma = list.find(',');
      auto param = parseTypeName(list.substr(0, comma));
      if (!param)
        return refuse("export '" + e.name + "': unknown parameter type '" +
                      std::string(list.substr(0, comma)) + "'");
      signature.params.push_back(*param);
      list = comma == std::string_view::npos ? "" : list.substr(comma + 1);
    }
    if (!rest.empty()) {
      signature.result = parseTypeName(rest.substr(2));
      if (!signature.result)
        return refuse("export '" + e.name + "': unknown result type '" +
                      std::string(rest.substr(2)) + "'");
    }
    if (lower(signature) != type) {
      return refuse("export '" + e.name + "' declares a signature whose Wasm type is " +
                    describe(lower(signature)) + " but the function's type is " + describe(type));
    }
  }
  if (signature.name.size() > SANDPOOL_MAX_NAME) {
    return refuse("export '" + e.name + "': name longer than " + std::to_string(SANDPOOL_MAX_NAME) +
                  " bytes");
  }
  if (signature.params.size() > SANDPOOL_MAX_PARAMS) {
    return refuse("export '" + e.name + "' has more than " + std::to_string(SANDPOOL_MAX_PARAMS) +
                  " parameters");
  }
  return std::optional<Signature>(std::move(signature));
}

std::string cString(std::string_view text) {
  std::string quoted = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      quoted += '\\';
      quoted += char(c);
    } else if (c < 0x20 || c >= 0x7f) {
      quoted += fmt::format("\\{:03o}", c);
    } else {
      quoted += char(c);
    }
  }
  return quoted + "\"";
}

std::string exportSymbol(std::string_view name) { return mangle(kModuleSymbol) + mangle(name); }

std::string parameterList(std::string_view instance, const FuncType& type) {
  std::string text(instance);
  for (size_t i = 0; i < type.params.size(); i++)
    text += fmt::format(", {} a{}", cType(type.params[i]), i);
  return text;
}

std::string resultType(const FuncType& type) {
  return type.results.empty() ? "void" : std::string(cType(type.results[0]));
}

// Checks one import and writes what defines it, if the bridge does not.
vm::Expected<std::string> importGlue(const Module& module, const Import& import) {
  const std::string who = "import '" + import.module + "'.'" + import.name + "'";
  if (import.kind != ExternKind::kFunction) {
    return refuse(who + " is not a function; a module may import only functions");
  }
  const FuncType& type = module.types[import.type_index];
  const std::string symbol = mangle(import.module) + mangle(import.name);
  if (import.module == kWasi) {
    for (const auto& known : wasiFunctions()) {
      if (known.name != import.name) continue;
      if (known.type != type)
        return refuse(who + " has type " + describe(type) + ", WASI's is " + describe(known.type));
      return std::string();
    }
    if (type.results != std::vector<ValType>{kI32}) {
      return refuse(who + " is not in sandpool's WASI subset and does not return an errno");
    }
    return fmt::format("u32 {}({}) {{\n  (void)wasi;\n  return {};\n}}\n", symbol,
                       parameterList("struct Z_wasi_snapshot_preview1_instance_t* wasi", type),
                       kWasiEnosys);
  }
  if (import.module == kSandpool) {
    if (type.results.size() > 1)
      return refuse(who + " has several results; host functions return one value");
    std::string body = fmt::format("{} {}({}) {{\n  (void)host;\n", resultType(type), symbol,
                                   parameterList("struct Z_sandpool_instance_t* host", type));
    body += fmt::format("  sandpool_value args[{}];\n", std::max<size_t>(type.params.size(), 1));
    for (size_t i = 0; i < type.params.size(); i++) {
      const SandpoolType t = fromWasm(type.params[i]);
      body += fmt::format("  args[{0}].type = {1};\n  args[{0}].{2} = a{0};\n", i, sdkTypeName(t),
                          member(t));
    }
    const std::string call = fmt::format(
        "sandpool_wasm_host_call({}, args, {}, {})", cString(import.name), type.params.size(),
        type.results.empty() ? "SANDPOOL_TYPE_VOID" : sdkTypeName(fromWasm(type.results[0])));
    if (type.results.empty()) {
      body += "  " + call + ";\n}\n";
    } else {
      body += fmt::format("  return {}.{};\n}}\n", call, member(fromWasm(type.results[0])));
    }
    return body;
  }
  return refuse(who + " is neither WASI preview 1 (" + std::string(kWasi) + ") nor sandpool's (" +
                std::string(kSandpool) + ")");
}

std::string exportGlue(size_t index, const Export& e, const Signature& signature) {
  std::string text = fmt::format(
      "static void export_{}(const sandpool_value* args, uint32_t arg_count, sandpool_value* "
      "result) {{\n"
      "  (void)args, (void)arg_count, (void)result;\n",
      index);
  std::string arguments = "&instance";
  for (size_t i = 0; i < signature.params.size(); i++) {
    if (isBuffer(signature.params[i])) {
      text += fmt::format(
          "  u32 at{0} = {1}(&instance, args[{0}].buf.size);\n"
          "  sandpool_wasm_copy_in(memory, at{0}, &args[{0}].buf);\n",
          i, exportSymbol(kAllocator));
      arguments += fmt::format(", at{0}, args[{0}].buf.size", i);
    } else {
      arguments += fmt::format(", args[{}].{}", i, member(signature.params[i]));
    }
  }
  const std::string call = exportSymbol(e.name) + "(" + arguments + ")";
  if (!signature.result) {
    text += "  " + call + ";\n";
  } else if (isBuffer(*signature.result)) {
    text += "  sandpool_wasm_take_result(memory, " + call + ", result);\n";
  } else {
    text += fmt::format("  result->{} = {};\n", member(*signature.result), call);
  }
  text += "}\n";
  text += fmt::format("static const sandpool_type params_{}[] = {{", index);
  for (SandpoolType p : signature.params) text += std::string(sdkTypeName(p)) + ", ";
  text += "SANDPOOL_TYPE_VOID};\n";
  return text;
}

const Export* findExport(const Module& module, std::string_view name, ExternKind kind) {
  for (const auto& e : module.exports) {
    if (e.name == name && e.kind == kind) return &e;
  }
  return nullptr;
}

}  // namespace

std::string mangle(std::string_view name) {
  std::string result = "Z_";
  for (unsigned char c : name) {
    const bool kept = (c < 0x80 && std::isalnum(c) && c != 'Z') || c == '_';
    result += kept ? std::string(1, char(c)) : fmt::format("Z{:02X}", c);
  }
  return result;
}

vm::Expected<std::string> writeGlue(const Module& module) {
  std::string imports;
  bool imports_wasi = false, imports_sandpool = false;
  for (const auto& import : module.imports) {
    auto glue = importGlue(module, import);
    if (!glue) return glue.takeError();
    imports += *glue;
    imports_wasi |= import.module == kWasi;
    imports_sandpool |= import.module == kSandpool;
  }

  const bool has_memory = findExport(module, "memory", ExternKind::kMemory) != nullptr;
  std::string exports;
  std::string registrations;
  bool needs_allocator = false;
  for (size_t i = 0; i < module.exports.size(); i++) {
    const Export& e = module.exports[i];
    if (e.kind != ExternKind::kFunction || e.name == kAllocator || e.name == kInitialize ||
        e.name == "_start")
      continue;
    auto signature = signatureOf(e, module.functionType(e.index));
    if (!signature) return signature.takeError();
    if (!*signature) continue;
    const Signature& s = **signature;
    for (SandpoolType p : s.params) needs_allocator |= isBuffer(p);
    if ((needs_allocator || (s.result && isBuffer(*s.result))) && !has_memory) {
      return refuse("export '" + e.name +
                    "' passes strings or bytes but the module exports no memory named 'memory'");
    }
    exports += exportGlue(i, e, s);
    registrations +=
        fmt::format("  sandpool_export({}, export_{}, {}, {}, params_{});\n", cString(s.name), i,
                    s.result ? sdkTypeName(*s.result) : "SANDPOOL_TYPE_VOID", s.params.size(), i);
  }
  if (needs_allocator) {
    const Export* allocator = findExport(module, kAllocator, ExternKind::kFunction);
    if (!allocator || module.functionType(allocator->index) != FuncType{{kI32}, {kI32}}) {
      return refuse("an export takes strings or bytes, so the module must export " +
                    std::string(kAllocator) + " of type (i32) -> (i32)");
    }
  }
  const Export* initialize = findExport(module, kInitialize, ExternKind::kFunction);
  if (initialize && module.functionType(initialize->index) != FuncType{}) {
    return refuse("export '_initialize' must take and return nothing");
  }

  const std::string prefix = mangle(kModuleSymbol);
  std::string glue =
      "/* Generated by sandpool from a Wasm module; see docs/wasm.md. */\n"
      "#include <sandpool/wasm_bridge.h>\n#include \"module.h\"\n\n";
  glue +=
      fmt::format("static {}_instance_t instance;\nstatic wasm_rt_memory_t* memory;\n\n", prefix);
  glue += imports + exports;
  glue += "\nvoid sandpool_main(void) {\n  wasm_rt_init();\n";
  glue += fmt::format("  {}_init_module();\n", prefix);
  std::string instance_args = "&instance";
  // wasm2c passes import instances in the order of the import module names.
  if (imports_sandpool) instance_args += ", &sandpool_wasm_host";
  if (imports_wasi) instance_args += ", &sandpool_wasm_wasi";
  glue += fmt::format("  {}_instantiate({});\n", prefix, instance_args);
  if (has_memory) {
    glue += fmt::format("  memory = {}(&instance);\n", exportSymbol("memory"));
    glue += "  sandpool_wasm_wasi.memory = memory;\n  sandpool_wasm_host.memory = memory;\n";
  }
  if (initialize) glue += fmt::format("  {}(&instance);\n", exportSymbol(kInitialize));
  glue += registrations + "  (void)memory;\n}\n";
  return glue;
}

}  // namespace sandpool::wasm
