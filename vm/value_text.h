// The text form of values, the one that the `sandpool` CLI and sandpool-run
// read arguments in and print results in (docs/server.md, docs/guest-abi.md):
//
//   i32 i64 u32 u64   decimal, or hex with 0x: -12, 4294967295, 0xff
//   f32 f64           decimal or exponent, nan, inf: 2.5, -1e-3
//   bool              true/false (also 1/0)
//   string            the text itself
//   bytes             hex digits, 0x optional: 0x00ff, 00ff
//   void              (void); parsing ignores the text
//
// formatValue() writes what parseValue() reads back to the same value (NaN
// payloads aside). Strings come out raw: a caller that shows them on a
// terminal escapes them (common/untrusted_text.h).
#pragma once

#include <string>
#include <string_view>

#include "vm/error.h"
#include "vm/value.h"

namespace sandpool::vm {

std::string formatValue(const Value& value);
// Parses `text` as a value of `type`; a kBadArguments error quotes the text
// and names the type ("'12abc' is not a valid i32").
Expected<Value> parseValue(ValueType type, std::string_view text);
// Parses "TYPE:TEXT" ("i32:5", "bytes:0x00ff", "string:a:b").
Expected<Value> parseTypedValue(std::string_view typed_text);

}  // namespace sandpool::vm
