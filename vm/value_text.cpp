#include "vm/value_text.h"

#include <charconv>
#include <type_traits>

#include <fmt/format.h>

namespace sandpool::vm {

namespace {

// "'<text>'<what><detail>", for an argument that does not parse. Kept out
// of line: an error path.
[[gnu::cold]] Error badArgument(std::string_view text, std::string_view what,
                                std::string_view detail = {}) {
  return makeError(ErrorKind::kBadArguments, fmt::format("'{}'{}{}", text, what, detail));
}

template <typename T>
Expected<Value> parseNumber(std::string_view text, ValueType type) {
  T v{};
  std::string_view digits = text;
  std::from_chars_result parsed;
  if constexpr (std::is_integral_v<T>) {
    const bool hex =
        digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X');
    if (hex) digits.remove_prefix(2);
    parsed = std::from_chars(digits.data(), digits.data() + digits.size(), v, hex ? 16 : 10);
  } else {
    parsed = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  }
  auto [end, ec] = parsed;
  if (ec != std::errc() || end != digits.data() + digits.size()) {
    return badArgument(text, " is not a valid ", valueTypeName(type));
  }
  return Value(v);
}

}  // namespace

std::string formatValue(const Value& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, Void>) {
          return "(void)";
        } else if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
          // The shortest text that parses back to the same float.
          char buf[64];
          auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
          return std::string(buf, ec == std::errc() ? end : buf);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return v;
        } else if constexpr (std::is_same_v<T, Bytes>) {
          std::string text = "0x";
          for (uint8_t b : v) {
            text += "0123456789abcdef"[b >> 4];
            text += "0123456789abcdef"[b & 15];
          }
          return text;
        } else {
          return std::to_string(v);
        }
      },
      value);
}

Expected<Value> parseValue(ValueType type, std::string_view text) {
  switch (type) {
    case ValueType::kVoid: return Value(Void{});
    case ValueType::kI32: return parseNumber<int32_t>(text, type);
    case ValueType::kI64: return parseNumber<int64_t>(text, type);
    case ValueType::kU32: return parseNumber<uint32_t>(text, type);
    case ValueType::kU64: return parseNumber<uint64_t>(text, type);
    case ValueType::kF32: return parseNumber<float>(text, type);
    case ValueType::kF64: return parseNumber<double>(text, type);
    case ValueType::kBool:
      if (text == "true" || text == "1") return Value(true);
      if (text == "false" || text == "0") return Value(false);
      return badArgument(text, " is not a bool (true/false)");
    case ValueType::kString: return Value(std::string(text));
    case ValueType::kBytes: {
      std::string_view digits = text.substr(0, 2) == "0x" ? text.substr(2) : text;
      if (digits.size() % 2 != 0) {
        return makeError(ErrorKind::kBadArguments, "bytes need an even number of hex digits");
      }
      Bytes bytes(digits.size() / 2);
      for (size_t i = 0; i < bytes.size(); i++) {
        auto [end, ec] =
            std::from_chars(digits.data() + 2 * i, digits.data() + 2 * i + 2, bytes[i], 16);
        if (ec != std::errc() || end != digits.data() + 2 * i + 2) {
          return badArgument(text, " is not hex bytes");
        }
      }
      return Value(std::move(bytes));
    }
  }
  return makeError(ErrorKind::kBadArguments, "unknown value type");
}

Expected<Value> parseTypedValue(std::string_view typed_text) {
  const size_t colon = typed_text.find(':');
  ValueType type;
  if (colon == std::string_view::npos || !parseValueType(typed_text.substr(0, colon), type)) {
    return badArgument(typed_text,
                       " is not TYPE:VALUE (types: i32 i64 u32 u64 f32 f64 bool string bytes)");
  }
  return parseValue(type, typed_text.substr(colon + 1));
}

}  // namespace sandpool::vm
