#include "vm/guest_protocol.h"

#include <sandpool/abi.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <set>

#include <fmt/format.h>

namespace sandpool::vm {

static_assert(sizeof(sandpool_boot_info::entropy) == kEntropyBytes);
static_assert(sizeof(sandpool_call_header::entropy) == kEntropyBytes);

namespace {

Error badTable(const std::string& what) {
  return makeError(ErrorKind::kInvalidGuest, fmt::format("export table: {}", what));
}

std::string describeArgs(const std::vector<Value>& args) {
  std::string text = "(";
  for (size_t i = 0; i < args.size(); i++) {
    if (i) text += ", ";
    text += valueTypeName(typeOf(args[i]));
  }
  return text + ")";
}

// Takes bytes off the front of a span; nullopt where fewer are left.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  std::optional<std::span<const uint8_t>> take(size_t n) {
    if (in_.size() < n) return std::nullopt;
    auto part = in_.first(n);
    in_ = in_.subspan(n);
    return part;
  }

 private:
  std::span<const uint8_t> in_;
};

}  // namespace

Expected<void> writeBootInfo(std::span<uint8_t> destination, const MemoryLayout& layout,
                             Entropy entropy) {
  sandpool_boot_info boot{};
  if (destination.size() < sizeof boot) {
    return makeError(ErrorKind::kInternal, fmt::format("boot info takes {} bytes; {} given",
                                                       sizeof boot, destination.size()));
  }
  boot.magic = SANDPOOL_BOOT_MAGIC;
  boot.abi_version = SANDPOOL_ABI_VERSION;
  boot.memory_size = layout.memory_size;
  boot.input_addr = layout.input_addr;
  boot.input_size = layout.input_size;
  boot.output_addr = layout.output_addr;
  boot.output_size = layout.output_size;
  boot.host_call_addr = layout.host_call_addr;
  boot.host_call_size = layout.host_call_size;
  boot.heap_start = layout.heap_start;
  boot.heap_end = layout.heap_end;
  boot.stack_top = layout.stack_top;
  std::copy(entropy.begin(), entropy.end(), boot.entropy);
  std::memcpy(destination.data(), &boot, sizeof boot);
  return {};
}

Expected<std::vector<FunctionSignature>> parseExportTable(std::span<const uint8_t> table) {
  sandpool_export_table_header header;
  if (table.size() < sizeof header) return badTable("shorter than its header");
  std::memcpy(&header, table.data(), sizeof header);
  if (header.magic != SANDPOOL_EXPORTS_MAGIC) return badTable("bad magic");
  if (header.count > SANDPOOL_MAX_EXPORTS) {
    return badTable(
        fmt::format("{} exports, over the limit of {}", header.count, SANDPOOL_MAX_EXPORTS));
  }
  Reader in(table.subspan(sizeof header));
  std::vector<FunctionSignature> exports;
  std::set<std::string, std::less<>> names;
  for (uint32_t i = 0; i < header.count; i++) {
    const std::string where = fmt::format("export {}", i);
    auto fixed = in.take(2);
    if (!fixed) return badTable(fmt::format("{} truncated", where));
    FunctionSignature sig;
    const uint8_t result = (*fixed)[0], param_count = (*fixed)[1];
    if (!isValidValueType(result))
      return badTable(fmt::format("{} has result type tag {}", where, result));
    if (param_count > SANDPOOL_MAX_PARAMS)
      return badTable(fmt::format("{} has too many parameters", where));
    sig.result = static_cast<ValueType>(result);
    auto params = in.take(param_count);
    if (!params) return badTable(fmt::format("{} truncated", where));
    for (uint8_t tag : *params) {
      if (!isValidValueType(tag) || tag == SANDPOOL_TYPE_VOID) {
        return badTable(fmt::format("{} has parameter type tag {}", where, tag));
      }
      sig.params.push_back(static_cast<ValueType>(tag));
    }
    auto size = in.take(2);
    if (!size) return badTable(fmt::format("{} truncated", where));
    const uint16_t name_size = static_cast<uint16_t>((*size)[0] | (*size)[1] << 8);
    if (name_size == 0 || name_size > SANDPOOL_MAX_NAME)
      return badTable(fmt::format("{} has a bad name length", where));
    auto name = in.take(name_size);
    if (!name) return badTable(fmt::format("{} truncated", where));
    sig.name.assign(name->begin(), name->end());
    if (!names.insert(sig.name).second)
      return badTable(fmt::format("function '{}' exported twice", sig.name));
    exports.push_back(std::move(sig));
  }
  return exports;
}

Expected<void> checkArguments(const FunctionSignature& signature, const std::vector<Value>& args) {
  bool match = args.size() == signature.params.size();
  for (size_t i = 0; match && i < args.size(); i++) match = typeOf(args[i]) == signature.params[i];
  if (!match) {
    return makeError(ErrorKind::kBadArguments,
                     fmt::format("'{}' expects {}, got {}", signature.name, signature.describe(),
                                 describeArgs(args)));
  }
  return {};
}

Expected<void> encodeCallRequest(uint32_t function_index, const std::vector<Value>& args,
                                 Entropy entropy, uint64_t capacity,
                                 std::vector<uint8_t>& message) {
  message.assign(sizeof(sandpool_call_header), 0);
  for (const Value& arg : args) encodeValue(arg, message);
  if (message.size() > capacity) {
    return makeError(ErrorKind::kLimitExceeded,
                     fmt::format("arguments take {} bytes; the input buffer holds {}",
                                 message.size(), capacity));
  }
  sandpool_call_header header{};
  header.magic = SANDPOOL_CALL_MAGIC;
  header.function_index = function_index;
  header.arg_count = static_cast<uint32_t>(args.size());
  header.args_size = static_cast<uint32_t>(message.size() - sizeof header);
  std::copy(entropy.begin(), entropy.end(), header.entropy);
  std::memcpy(message.data(), &header, sizeof header);
  return {};
}

Expected<Value> decodeResult(std::span<const uint8_t> output, const FunctionSignature& signature) {
  sandpool_result_header header{};
  if (output.size() >= sizeof header) std::memcpy(&header, output.data(), sizeof header);
  if (output.size() < sizeof header || header.magic != SANDPOOL_RESULT_MAGIC ||
      header.size > output.size() - sizeof header) {
    return makeError(ErrorKind::kGuestFault,
                     fmt::format("guest left a malformed result header (size {})", header.size));
  }
  std::span<const uint8_t> payload = output.subspan(sizeof header, header.size);
  if (header.status == SANDPOOL_STATUS_ERROR) {
    return makeError(ErrorKind::kGuestAbort,
                     fmt::format("guest function '{}' failed: {}", signature.name,
                                 std::string(payload.begin(), payload.end())));
  }
  auto value = decodeValue(payload);
  if (!value)
    return makeError(ErrorKind::kGuestFault,
                     fmt::format("guest result: {}", value.error().message));
  if (typeOf(*value) != signature.result) {
    return makeError(
        ErrorKind::kGuestFault,
        fmt::format("guest returned {} from '{}', declared {}", valueTypeName(typeOf(*value)),
                    signature.name, valueTypeName(signature.result)));
  }
  return value;
}

Expected<HostCallRequest> decodeHostCall(std::span<const uint8_t> buffer) {
  sandpool_host_call_header header{};
  if (buffer.size() < sizeof header) {
    return makeError(
        ErrorKind::kBadHostCall,
        fmt::format("host-call buffer of {} bytes is shorter than its header", buffer.size()));
  }
  std::memcpy(&header, buffer.data(), sizeof header);
  const uint64_t capacity = buffer.size() - sizeof header;
  if (header.magic != SANDPOOL_HOST_CALL_MAGIC) {
    return makeError(ErrorKind::kBadHostCall,
                     fmt::format("host call header has bad magic {}", toHex(header.magic)));
  }
  if (header.name_size == 0 || header.name_size > SANDPOOL_MAX_NAME ||
      header.arg_count > SANDPOOL_MAX_PARAMS ||
      uint64_t{header.name_size} + header.args_size > capacity) {
    return makeError(ErrorKind::kBadHostCall,
                     fmt::format("host call header out of bounds: name {} bytes, {} arguments in "
                                 "{} bytes, buffer {} bytes",
                                 header.name_size, header.arg_count, header.args_size, capacity));
  }
  auto body = buffer.subspan(sizeof header);
  HostCallRequest request;
  request.name.assign(body.begin(), body.begin() + header.name_size);
  std::span<const uint8_t> encoded = body.subspan(header.name_size, header.args_size);
  for (uint32_t i = 0; i < header.arg_count; i++) {
    auto arg = decodeValue(encoded);
    if (!arg) {
      return makeError(ErrorKind::kBadHostCall, fmt::format("host call '{}' argument {}: {}",
                                                            request.name, i, arg.error().message));
    }
    request.args.push_back(std::move(arg.value()));
  }
  if (!encoded.empty()) {
    return makeError(ErrorKind::kBadHostCall,
                     fmt::format("host call '{}' has {} bytes after its arguments", request.name,
                                 encoded.size()));
  }
  return request;
}

std::vector<uint8_t> encodeHostReply(const Expected<Value>& reply, uint64_t capacity) {
  // The payload is built apart and copied behind the header: appending it to
  // a header-sized vector trips GCC 12's -Warray-bounds (a false positive).
  sandpool_result_header header = {SANDPOOL_RESULT_MAGIC, SANDPOOL_STATUS_OK, 0, 0};
  std::vector<uint8_t> payload;
  if (reply) {
    encodeValue(reply.value(), payload);
  } else {
    header.status = SANDPOOL_STATUS_ERROR;
    payload.assign(reply.error().message.begin(), reply.error().message.end());
  }
  if (sizeof header + payload.size() > capacity) {
    static constexpr std::string_view kTooLarge = "host reply does not fit the host-call buffer";
    header.status = SANDPOOL_STATUS_ERROR;
    payload.assign(kTooLarge.begin(), kTooLarge.end());
  }
  header.size = static_cast<uint32_t>(payload.size());
  std::vector<uint8_t> message(sizeof header + payload.size());
  std::memcpy(message.data(), &header, sizeof header);
  std::copy(payload.begin(), payload.end(), message.begin() + sizeof header);
  return message;
}

Error abortError(uint32_t code, std::string_view message) {
  switch (code) {
    case SANDPOOL_ABORT_OUT_OF_MEMORY:
      return makeError(ErrorKind::kOutOfMemory,
                       fmt::format("guest ran out of memory: {}", message));
    case SANDPOOL_ABORT_RESULT_TOO_LARGE:
      return makeError(ErrorKind::kLimitExceeded,
                       fmt::format("guest's {} (the guest's outputBytes VM setting)", message));
    case SANDPOOL_ABORT_BAD_REQUEST:
      return makeError(ErrorKind::kInternal,
                       fmt::format("guest refused the call request: {}", message));
    default: return makeError(ErrorKind::kGuestAbort, fmt::format("guest aborted: {}", message));
  }
}

}  // namespace sandpool::vm
