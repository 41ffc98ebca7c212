#include "wasm/glue_writer.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <optional>
#include <span>

#include <fmt/format.h>

#include <sandpool/abi.h>

namespace sandpool::wasm {
namespace {

constexpr std::string_view kWasi = "wasi_snapshot_preview1";
constexpr std::string_view kSandpool = "sandpool";
constexpr std::string_view kAllocator = "sandpool_alloc";
constexpr std::string_view kInitialize = "_initialize";
constexpr uint32_t kWasiSuccess = 0;
constexpr uint32_t kWasiEbadf = 8;
constexpr uint32_t kWasiEnosys = 52;
constexpr uint32_t kWasiEnotsup = 58;

using enum ValType;

// Every WASI preview 1 function, with its Wasm type. `implemented`: defined
// by guest/wasm/runtime/wasi.c; the others are generated as stubs returning
// `stub_errno`: EBADF for those that act on a descriptor (a sandpool guest
// has none but stdio, and no preopened folder, which is how wasi-libc's
// preopen scan ends), ENOTSUP for signals, ENOSYS for polling, success for
// sched_yield (there is no other thread).
struct WasiFunction {
  std::string_view name;
  FuncType type;
  bool implemented = false;
  uint32_t stub_errno = kWasiEnosys;
};
std::span<const WasiFunction> wasiFunctions() {
  static const FuncType i1{{kI32}, {kI32}};
  static const FuncType i2{{kI32, kI32}, {kI32}};
  static const FuncType i3{{kI32, kI32, kI32}, {kI32}};
  static const FuncType i4{{kI32, kI32, kI32, kI32}, {kI32}};
  static const FuncType i5{{kI32, kI32, kI32, kI32, kI32}, {kI32}};
  static const FuncType i6{{kI32, kI32, kI32, kI32, kI32, kI32}, {kI32}};
  static const WasiFunction functions[] = {
      {"args_get", i2, true},
      {"args_sizes_get", i2, true},
      {"environ_get", i2, true},
      {"environ_sizes_get", i2, true},
      {"clock_res_get", i2, false, kWasiEnosys},
      {"clock_time_get", {{kI32, kI64, kI32}, {kI32}}, true},
      {"fd_advise", {{kI32, kI64, kI64, kI32}, {kI32}}, false, kWasiEbadf},
      {"fd_allocate", {{kI32, kI64, kI64}, {kI32}}, false, kWasiEbadf},
      {"fd_close", i1, false, kWasiEbadf},
      {"fd_datasync", i1, false, kWasiEbadf},
      {"fd_fdstat_get", i2, true},
      {"fd_fdstat_set_flags", i2, false, kWasiEbadf},
      {"fd_fdstat_set_rights", {{kI32, kI64, kI64}, {kI32}}, false, kWasiEbadf},
      {"fd_filestat_get", i2, false, kWasiEbadf},
      {"fd_filestat_set_size", {{kI32, kI64}, {kI32}}, false, kWasiEbadf},
      {"fd_filestat_set_times", {{kI32, kI64, kI64, kI32}, {kI32}}, false, kWasiEbadf},
      {"fd_pread", {{kI32, kI32, kI32, kI64, kI32}, {kI32}}, false, kWasiEbadf},
      {"fd_prestat_get", i2, false, kWasiEbadf},
      {"fd_prestat_dir_name", i3, false, kWasiEbadf},
      {"fd_pwrite", {{kI32, kI32, kI32, kI64, kI32}, {kI32}}, false, kWasiEbadf},
      {"fd_read", i4, false, kWasiEbadf},
      {"fd_readdir", {{kI32, kI32, kI32, kI64, kI32}, {kI32}}, false, kWasiEbadf},
      {"fd_renumber", i2, false, kWasiEbadf},
      {"fd_seek", {{kI32, kI64, kI32, kI32}, {kI32}}, false, kWasiEbadf},
      {"fd_sync", i1, false, kWasiEbadf},
      {"fd_tell", i2, false, kWasiEbadf},
      {"fd_write", i4, true},
      {"path_create_directory", i3, false, kWasiEbadf},
      {"path_filestat_get", i5, false, kWasiEbadf},
      {"path_filestat_set_times", {{kI32, kI32, kI32, kI32, kI64, kI64, kI32}, {kI32}}, false,
       kWasiEbadf},
      {"path_link", {{kI32, kI32, kI32, kI32, kI32, kI32, kI32}, {kI32}}, false, kWasiEbadf},
      {"path_open", {{kI32, kI32, kI32, kI32, kI32, kI64, kI64, kI32, kI32}, {kI32}}, false,
       kWasiEbadf},
      {"path_readlink", i6, false, kWasiEbadf},
      {"path_remove_directory", i3, false, kWasiEbadf},
      {"path_rename", i6, false, kWasiEbadf},
      {"path_symlink", i5, false, kWasiEbadf},
      {"path_unlink_file", i3, false, kWasiEbadf},
      {"poll_oneoff", i4, false, kWasiEnosys},
      {"proc_exit", {{kI32}, {}}, true},
      {"proc_raise", i1, false, kWasiEnotsup},
      {"sched_yield", {{}, {kI32}}, false, kWasiSuccess},
      {"random_get", i2, true},
      {"sock_accept", i3, false, kWasiEbadf},
      {"sock_recv", i6, false, kWasiEbadf},
      {"sock_send", i5, false, kWasiEbadf},
      {"sock_shutdown", i2, false, kWasiEbadf},
  };
  return functions;
}

vm::Error refuse(const std::string& why) {
  return vm::makeError(vm::ErrorKind::kInvalidGuest, fmt::format("wasm module: {}", why));
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

// The signature of an export or a "sandpool" import, `who` naming it in
// errors: declared in its name ("greet(string)->string"), or taken from its
// Wasm type for plain names. nullopt: a plain name whose type sandpool
// cannot call (several results).
vm::Expected<std::optional<Signature>> signatureOf(const std::string& who, const std::string& name,
                                                   const FuncType& type) {
  Signature signature;
  const size_t open = name.find('(');
  if (open == std::string::npos) {
    if (type.results.size() > 1) return std::optional<Signature>();
    signature.name = name;
    for (ValType p : type.params) signature.params.push_back(fromWasm(p));
    if (!type.results.empty()) signature.result = fromWasm(type.results[0]);
  } else {
    const size_t close = name.find(')', open);
    const std::string_view rest =
        close == std::string::npos ? "" : std::string_view(name).substr(close + 1);
    if (close == std::string::npos || open == 0 || (!rest.empty() && rest.substr(0, 2) != "->")) {
      return refuse(
          fmt::format("{} is not of the form name(type,...) or name(type,...)->type", who));
    }
    signature.name = name.substr(0, open);
    std::string_view list = std::string_view(name).substr(open + 1, close - open - 1);
    while (!list.empty()) {
      const size_t comma = list.find(',');
      auto param = parseTypeName(list.substr(0, comma));
      if (!param)
        return refuse(fmt::format("{}: unknown parameter type '{}'", who, list.substr(0, comma)));
      signature.params.push_back(*param);
      list = comma == std::string_view::npos ? "" : list.substr(comma + 1);
    }
    if (!rest.empty()) {
      signature.result = parseTypeName(rest.substr(2));
      if (!signature.result)
        return refuse(fmt::format("{}: unknown result type '{}'", who, rest.substr(2)));
    }
    if (lower(signature) != type) {
      return refuse(
          fmt::format("{} declares a signature whose Wasm type is {} but the function's type is {}",
                      who, describe(lower(signature)), describe(type)));
    }
  }
  if (signature.name.size() > SANDPOOL_MAX_NAME) {
    return refuse(fmt::format("{}: name longer than {} bytes", who, SANDPOOL_MAX_NAME));
  }
  if (signature.params.size() > SANDPOOL_MAX_PARAMS) {
    return refuse(fmt::format("{} has more than {} parameters", who, SANDPOOL_MAX_PARAMS));
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

// What the glue of imports and exports needs of the module beyond itself.
struct GlueNeeds {
  std::string memory;     // who passes strings or bytes, so needs the exported memory
  std::string allocator;  // who copies strings or bytes in, so needs sandpool_alloc
};

// A "sandpool" import as a host call of the declared (or plain) name: each
// string or bytes parameter (address, size) is taken from linear memory,
// checked against it (outside it: the out-of-bounds trap), and a string or
// bytes result is copied into memory the module's allocator gives, returned
// as address | size << 32, as for exports.
std::string hostImportGlue(const std::string& symbol, const Signature& signature,
                           const FuncType& type, GlueNeeds& needs) {
  const std::string who = fmt::format("import 'sandpool'.'{}'", signature.name);
  std::string body = fmt::format("{} {}({}) {{\n  (void)host;\n", resultType(type), symbol,
                                 parameterList("struct Z_sandpool_instance_t* host", type));
  body += fmt::format("  sandpool_value args[{}];\n", std::max<size_t>(signature.params.size(), 1));
  size_t wasm_arg = 0;
  for (size_t i = 0; i < signature.params.size(); i++) {
    const SandpoolType t = signature.params[i];
    body += fmt::format("  args[{}].type = {};\n", i, sdkTypeName(t));
    if (isBuffer(t)) {
      needs.memory = who;
      body += fmt::format("  sandpool_wasm_import_buffer(memory, a{}, a{}, &args[{}]);\n", wasm_arg,
                          wasm_arg + 1, i);
      wasm_arg += 2;
    } else {
      body += fmt::format("  args[{}].{} = a{};\n", i, member(t), wasm_arg++);
    }
  }
  const std::string call =
      fmt::format("sandpool_wasm_host_call({}, args, {}, {})", cString(signature.name),
                  signature.params.size(),
                  signature.result ? sdkTypeName(*signature.result) : "SANDPOOL_TYPE_VOID");
  if (!signature.result) {
    body += "  " + call + ";\n}\n";
  } else if (isBuffer(*signature.result)) {
    needs.memory = needs.allocator = who;
    body += "  sandpool_value result = " + call + ";\n";
    body += "  return sandpool_wasm_return_buffer(memory, &result, allocate);\n}\n";
  } else {
    body += fmt::format("  return {}.{};\n}}\n", call, member(*signature.result));
  }
  return body;
}

// Checks one import and writes what defines it, if the bridge does not.
vm::Expected<std::string> importGlue(const Module& module, const Import& import,
                                     GlueNeeds& needs) {
  const std::string who = fmt::format("import '{}'.'{}'", import.module, import.name);
  if (import.kind != ExternKind::kFunction) {
    return refuse(fmt::format("{} is not a function; a module may import only functions", who));
  }
  const FuncType& type = module.types[import.type_index];
  const std::string symbol = mangle(import.module) + mangle(import.name);
  if (import.module == kWasi) {
    for (const auto& known : wasiFunctions()) {
      if (known.name != import.name) continue;
      if (known.type != type)
        return refuse(
            fmt::format("{} has type {}, WASI's is {}", who, describe(type), describe(known.type)));
      if (known.implemented) return std::string();
      return fmt::format("u32 {}({}) {{\n  (void)wasi;\n  return {};\n}}\n", symbol,
                         parameterList("struct Z_wasi_snapshot_preview1_instance_t* wasi", type),
                         known.stub_errno);
    }
    return refuse(fmt::format("{} is not a WASI preview 1 function", who));
  }
  if (import.module == kSandpool) {
    auto signature = signatureOf(who, import.name, type);
    if (!signature) return signature.takeError();
    if (!*signature)
      return refuse(fmt::format("{} has several results; host functions return one value", who));
    return hostImportGlue(symbol, **signature, type, needs);
  }
  return refuse(
      fmt::format("{} is neither WASI preview 1 ({}) nor sandpool's ({})", who, kWasi, kSandpool));
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
  GlueNeeds needs;
  bool imports_wasi = false, imports_sandpool = false;
  for (const auto& import : module.imports) {
    auto glue = importGlue(module, import, needs);
    if (!glue) return glue.takeError();
    imports += *glue;
    imports_wasi |= import.module == kWasi;
    imports_sandpool |= import.module == kSandpool;
  }

  const bool has_memory = findExport(module, "memory", ExternKind::kMemory) != nullptr;
  std::string exports;
  std::string registrations;
  for (size_t i = 0; i < module.exports.size(); i++) {
    const Export& e = module.exports[i];
    if (e.kind != ExternKind::kFunction || e.name == kAllocator || e.name == kInitialize ||
        e.name == "_start")
      continue;
    auto signature =
        signatureOf(fmt::format("export '{}'", e.name), e.name, module.functionType(e.index));
    if (!signature) return signature.takeError();
    if (!*signature) continue;
    const Signature& s = **signature;
    for (SandpoolType p : s.params) {
      if (isBuffer(p)) needs.memory = needs.allocator = fmt::format("export '{}'", e.name);
    }
    if (s.result && isBuffer(*s.result)) needs.memory = fmt::format("export '{}'", e.name);
    exports += exportGlue(i, e, s);
    registrations +=
        fmt::format("  sandpool_export({}, export_{}, {}, {}, params_{});\n", cString(s.name), i,
                    s.result ? sdkTypeName(*s.result) : "SANDPOOL_TYPE_VOID", s.params.size(), i);
  }
  if (!needs.memory.empty() && !has_memory) {
    return refuse(
        fmt::format("{} passes strings or bytes but the module exports no memory named 'memory'",
                    needs.memory));
  }
  if (!needs.allocator.empty()) {
    const Export* allocator = findExport(module, kAllocator, ExternKind::kFunction);
    if (!allocator || module.functionType(allocator->index) != FuncType{{kI32}, {kI32}}) {
      return refuse(
          fmt::format("{} copies strings or bytes into linear memory, so the module must export {} "
                      "of type (i32) -> (i32)",
                      needs.allocator, kAllocator));
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
  if (!needs.allocator.empty()) {
    glue += fmt::format("static u32 allocate(u32 size) {{ return {}(&instance, size); }}\n\n",
                        exportSymbol(kAllocator));
  }
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
