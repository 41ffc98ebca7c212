#include "server/rpc_codec.h"

#include "common/untrusted_text.h"

namespace sandpool::server {

vm::Value fromRpc(rpc::Value::Reader value) {
  switch (value.which()) {
    case rpc::Value::VOID: return vm::Void{};
    case rpc::Value::I32: return value.getI32();
    case rpc::Value::I64: return value.getI64();
    case rpc::Value::U32: return value.getU32();
    case rpc::Value::U64: return value.getU64();
    case rpc::Value::F32: return value.getF32();
    case rpc::Value::F64: return value.getF64();
    case rpc::Value::BOOL: return value.getBool();
    case rpc::Value::STRING: {
      auto text = value.getString();
      return std::string(text.begin(), text.end());
    }
    case rpc::Value::BYTES: {
      auto data = value.getBytes();
      return vm::Bytes(data.begin(), data.end());
    }
  }
  // A union member from a newer client: treated as void, which then fails
  // the signature check with a typed badArguments error.
  return vm::Void{};
}

void toRpc(const vm::Value& value, rpc::Value::Builder out) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, vm::Void>) out.setVoid();
        else if constexpr (std::is_same_v<T, int32_t>) out.setI32(v);
        else if constexpr (std::is_same_v<T, int64_t>) out.setI64(v);
        else if constexpr (std::is_same_v<T, uint32_t>) out.setU32(v);
        else if constexpr (std::is_same_v<T, uint64_t>) out.setU64(v);
        else if constexpr (std::is_same_v<T, float>) out.setF32(v);
        else if constexpr (std::is_same_v<T, double>) out.setF64(v);
        else if constexpr (std::is_same_v<T, bool>) out.setBool(v);
        else if constexpr (std::is_same_v<T, std::string>) out.setString(kj::StringPtr(v.c_str(), v.size()));
        else out.setBytes(kj::arrayPtr(v.data(), v.size()));
      },
      value);
}

rpc::ValueType toRpc(vm::ValueType type) {
  // The schema's enumerants carry the ABI's tags.
  return static_cast<rpc::ValueType>(static_cast<uint16_t>(type));
}

void toRpc(const vm::FunctionSignature& sig, rpc::FunctionSignature::Builder out) {
  out.setName(sig.name);
  auto params = out.initParams(static_cast<unsigned>(sig.params.size()));
  for (size_t i = 0; i < sig.params.size(); ++i) params.set(static_cast<unsigned>(i), toRpc(sig.params[i]));
  out.setResult(toRpc(sig.result));
}

rpc::ErrorCode errorCode(vm::ErrorKind kind) {
  switch (kind) {
    case vm::ErrorKind::kInvalidGuest: return rpc::ErrorCode::INVALID_GUEST;
    case vm::ErrorKind::kUnknownFunction: return rpc::ErrorCode::UNKNOWN_FUNCTION;
    case vm::ErrorKind::kBadArguments: return rpc::ErrorCode::BAD_ARGUMENTS;
    case vm::ErrorKind::kGuestAbort: return rpc::ErrorCode::GUEST_ABORT;
    case vm::ErrorKind::kGuestFault: return rpc::ErrorCode::GUEST_FAULT;
    case vm::ErrorKind::kTimeout: return rpc::ErrorCode::TIMEOUT;
    case vm::ErrorKind::kBadHostCall: return rpc::ErrorCode::BAD_HOST_CALL;
    case vm::ErrorKind::kOutOfMemory: return rpc::ErrorCode::OUT_OF_MEMORY;
    case vm::ErrorKind::kLimitExceeded: return rpc::ErrorCode::LIMIT_EXCEEDED;
    case vm::ErrorKind::kResetFailed:
    case vm::ErrorKind::kBackendUnavailable:
    case vm::ErrorKind::kInternal: return rpc::ErrorCode::INTERNAL;
  }
  return rpc::ErrorCode::INTERNAL;
}

rpc::ErrorCode errorCode(pool::RefusalKind kind) {
  switch (kind) {
    case pool::RefusalKind::kOverloaded: return rpc::ErrorCode::OVERLOADED;
    case pool::RefusalKind::kShuttingDown: return rpc::ErrorCode::SHUTTING_DOWN;
    case pool::RefusalKind::kGuestRemoved: return rpc::ErrorCode::UNKNOWN_GUEST;
    case pool::RefusalKind::kNoVm: return rpc::ErrorCode::INTERNAL;
    case pool::RefusalKind::kVmQuota: return rpc::ErrorCode::QUOTA_EXCEEDED;
  }
  return rpc::ErrorCode::INTERNAL;
}

void setError(rpc::Error::Builder out, rpc::ErrorCode code, kj::StringPtr message) {
  out.setCode(code);
  // Messages quote names, guest aborts and ELF contents: escaped and bounded
  // like log fields (common/untrusted_text.h).
  out.setMessage(ptr(text::escapeUntrusted(std::string_view(message.begin(), message.size()))));
}

void toRpc(const vm::Error& error, rpc::Error::Builder out) {
  rpc::ErrorCode code = errorCode(error.kind);
  if (code == rpc::ErrorCode::INTERNAL) {
    setError(out, code, "internal error in the server; its log has the details");
  } else {
    setError(out, code, kj::StringPtr(error.message.c_str(), error.message.size()));
  }
}

}  // namespace sandpool::server
