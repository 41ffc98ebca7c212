#include "rpc-schema/value_codec.h"

#include <type_traits>

namespace sandpool::rpc {

vm::Value fromRpc(Value::Reader value) {
  switch (value.which()) {
    case Value::VOID: return vm::Void{};
    case Value::I32: return value.getI32();
    case Value::I64: return value.getI64();
    case Value::U32: return value.getU32();
    case Value::U64: return value.getU64();
    case Value::F32: return value.getF32();
    case Value::F64: return value.getF64();
    case Value::BOOL: return value.getBool();
    case Value::STRING: {
      auto text = value.getString();
      return std::string(text.begin(), text.end());
    }
    case Value::BYTES: {
      auto data = value.getBytes();
      return vm::Bytes(data.begin(), data.end());
    }
  }
  return vm::Void{};
}

void toRpc(const vm::Value& value, Value::Builder out) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, vm::Void>)
          out.setVoid();
        else if constexpr (std::is_same_v<T, int32_t>)
          out.setI32(v);
        else if constexpr (std::is_same_v<T, int64_t>)
          out.setI64(v);
        else if constexpr (std::is_same_v<T, uint32_t>)
          out.setU32(v);
        else if constexpr (std::is_same_v<T, uint64_t>)
          out.setU64(v);
        else if constexpr (std::is_same_v<T, float>)
          out.setF32(v);
        else if constexpr (std::is_same_v<T, double>)
          out.setF64(v);
        else if constexpr (std::is_same_v<T, bool>)
          out.setBool(v);
        else if constexpr (std::is_same_v<T, std::string>)
          out.setString(kj::StringPtr(v.c_str(), v.size()));
        else
          out.setBytes(kj::arrayPtr(v.data(), v.size()));
      },
      value);
}

vm::ValueType fromRpc(ValueType type) {
  return static_cast<vm::ValueType>(static_cast<uint16_t>(type));
}

ValueType toRpc(vm::ValueType type) { return static_cast<ValueType>(static_cast<uint16_t>(type)); }

}  // namespace sandpool::rpc
