// Typed values crossing the guest boundary, and their encoding (see
// guest/include/sandpool/abi.h). Decoding never trusts a length: every read
// is checked against the span it comes from.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "vm/error.h"

namespace sandpool::vm {

enum class ValueType : uint8_t {
  kVoid = 0,
  kI32 = 1,
  kI64 = 2,
  kU32 = 3,
  kU64 = 4,
  kF32 = 5,
  kF64 = 6,
  kBool = 7,
  kString = 8,
  kBytes = 9,
};

std::string_view valueTypeName(ValueType type);
// Parses "i32", "string", ...; false if the name is unknown.
bool parseValueType(std::string_view name, ValueType& type);
bool isValidValueType(uint8_t tag);

using Bytes = std::vector<uint8_t>;

struct Void {
  bool operator==(const Void&) const = default;
};

// The alternative index equals the ValueType tag.
using Value = std::variant<Void, int32_t, int64_t, uint32_t, uint64_t, float, double, bool,
                           std::string, Bytes>;

inline ValueType typeOf(const Value& value) { return static_cast<ValueType>(value.index()); }

// Number of bytes encodeValue() appends for `value`.
size_t encodedSize(const Value& value);
void encodeValue(const Value& value, std::vector<uint8_t>& out);

// Reads one encoded value from the front of `in` and advances `in` past it.
Expected<Value> decodeValue(std::span<const uint8_t>& in);

struct FunctionSignature {
  std::string name;
  std::vector<ValueType> params;
  ValueType result = ValueType::kVoid;

  std::string describe() const;  // "add(i32, i32) -> i32"
};

}  // namespace sandpool::vm
