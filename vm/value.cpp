#include "vm/value.h"

#include <cstring>
#include <type_traits>

#include <sandpool/abi.h>

#include <fmt/format.h>

namespace sandpool::vm {

namespace {

constexpr std::string_view kTypeNames[] = {"void", "i32", "i64",  "u32",    "u64",
                                           "f32",  "f64", "bool", "string", "bytes"};
static_assert(std::size(kTypeNames) == SANDPOOL_TYPE_LAST + 1);
static_assert(std::variant_size_v<Value> == SANDPOOL_TYPE_LAST + 1);

template <typename T>
void appendRaw(std::vector<uint8_t>& out, T v) {
  uint8_t raw[sizeof(T)];
  std::memcpy(raw, &v, sizeof(T));
  out.insert(out.end(), raw, raw + sizeof(T));
}

template <typename T>
bool takeRaw(std::span<const uint8_t>& in, T& v) {
  if (in.size() < sizeof(T)) return false;
  std::memcpy(&v, in.data(), sizeof(T));
  in = in.subspan(sizeof(T));
  return true;
}

Error truncated(std::string_view what) {
  return makeError(ErrorKind::kBadHostCall, fmt::format("encoded value truncated in {}", what));
}

}  // namespace

std::string_view valueTypeName(ValueType type) {
  auto i = static_cast<size_t>(type);
  return i < std::size(kTypeNames) ? kTypeNames[i] : "invalid";
}

bool parseValueType(std::string_view name, ValueType& type) {
  for (size_t i = 0; i < std::size(kTypeNames); i++) {
    if (kTypeNames[i] == name) {
      type = static_cast<ValueType>(i);
      return true;
    }
  }
  return false;
}

bool isValidValueType(uint8_t tag) { return tag <= SANDPOOL_TYPE_LAST; }

size_t encodedSize(const Value& value) {
  return std::visit(
      [](const auto& v) -> size_t {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, Void>) {
          return 1;
        } else if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, Bytes>) {
          return 1 + 4 + v.size();
        } else {
          return 1 + sizeof(T);
        }
      },
      value);
}

void encodeValue(const Value& value, std::vector<uint8_t>& out) {
  out.push_back(static_cast<uint8_t>(value.index()));
  std::visit(
      [&out](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, Void>) {
        } else if constexpr (std::is_same_v<T, bool>) {
          out.push_back(v ? 1 : 0);
        } else if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, Bytes>) {
          appendRaw(out, static_cast<uint32_t>(v.size()));
          out.insert(out.end(), v.begin(), v.end());
        } else {
          appendRaw(out, v);
        }
      },
      value);
}

Expected<Value> decodeValue(std::span<const uint8_t>& in) {
  if (in.empty()) return truncated("type tag");
  const uint8_t tag = in[0];
  in = in.subspan(1);
  switch (static_cast<ValueType>(tag)) {
    case ValueType::kVoid: return Value(Void{});
#define SANDPOOL_DECODE_SCALAR(KIND, T)        \
  case ValueType::KIND: {                      \
    T v;                                       \
    if (!takeRaw(in, v)) return truncated(#T); \
    return Value(v);                           \
  }
      SANDPOOL_DECODE_SCALAR(kI32, int32_t)
      SANDPOOL_DECODE_SCALAR(kI64, int64_t)
      SANDPOOL_DECODE_SCALAR(kU32, uint32_t)
      SANDPOOL_DECODE_SCALAR(kU64, uint64_t)
      SANDPOOL_DECODE_SCALAR(kF32, float)
      SANDPOOL_DECODE_SCALAR(kF64, double)
#undef SANDPOOL_DECODE_SCALAR
    case ValueType::kBool: {
      uint8_t b;
      if (!takeRaw(in, b)) return truncated("bool");
      if (b > 1) return makeError(ErrorKind::kBadHostCall, fmt::format("bool encoded as {}", b));
      return Value(b == 1);
    }
    case ValueType::kString:
    case ValueType::kBytes: {
      uint32_t size;
      if (!takeRaw(in, size)) return truncated("length");
      if (size > in.size()) {
        return makeError(
            ErrorKind::kBadHostCall,
            fmt::format("encoded length {} exceeds the {} bytes left", size, in.size()));
      }
      auto payload = in.first(size);
      in = in.subspan(size);
      // Built in place: GCC 12 reports a temporary's destruction here as a
      // free of an unallocated object (-Wfree-nonheap-object, a false
      // positive).
      if (tag == SANDPOOL_TYPE_STRING) {
        return Value(std::in_place_index<SANDPOOL_TYPE_STRING>, payload.begin(), payload.end());
      }
      return Value(std::in_place_index<SANDPOOL_TYPE_BYTES>, payload.begin(), payload.end());
    }
  }
  return makeError(ErrorKind::kBadHostCall, fmt::format("unknown value type tag {}", tag));
}

std::string FunctionSignature::describe() const {
  std::string text = name + "(";
  for (size_t i = 0; i < params.size(); i++) {
    if (i) text += ", ";
    text += valueTypeName(params[i]);
  }
  return text + ") -> " + std::string(valueTypeName(result));
}

}  // namespace sandpool::vm
