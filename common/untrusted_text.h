// Text that a guest or a client chose, made safe to show in a log line, an
// error message or on the CLI's terminal. Such text may hold a newline (a
// forged log line under another tenant's name), terminal escape sequences,
// bytes that are not UTF-8 (an invalid JSON log line) or a megabyte of
// anything; escapeUntrusted() turns it into one bounded line of printable
// text that still shows what was there. docs/security.md states the rule
// for clients and log readers.
//
// Every such text is escaped once, where it is written into the log line,
// the error or the terminal; stored and forwarded text stays raw.
//
// Threads: any (pure functions).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace sandpool::text {

// The longest escaped text one log field or error message carries.
inline constexpr size_t kMaxUntrustedBytes = 1024;
inline constexpr size_t kNoLimit = std::numeric_limits<size_t>::max();

enum class Escape {
  // A log field or an error message: one line, and `\` and `"` escaped too,
  // so the text cannot close the quotes of a key="value" field.
  kQuoted,
  // One line on a terminal: `\` and `"` stay as they are, so text that was
  // escaped as kQuoted already passes unchanged.
  kLine,
  // Several lines on a terminal (a guest's output): as kLine, but line
  // feeds and tabs stay.
  kText,
};

// What escapeUntrusted() writes:
//  - printable characters of valid UTF-8: unchanged;
//  - line feed, carriage return, tab: \n \r \t;
//  - the other C0 controls and DEL: \xHH;
//  - C1 controls (U+0080-U+009F), the line and paragraph separators
//    (U+2028, U+2029) and the bidirectional overrides (U+202A-U+202E,
//    U+2066-U+2069): \uHHHH;
//  - each byte that is not part of a valid, shortest-form UTF-8 sequence of
//    a Unicode scalar value: \xHH;
//  - past `max_bytes` of escaped text, the rest is cut at a character and
//    "...[truncated, N bytes in all]" appended (N: the size of `text`).
std::string escapeUntrusted(std::string_view text, Escape how = Escape::kQuoted,
                            size_t max_bytes = kMaxUntrustedBytes);

struct Utf8Char {
  char32_t code_point;
  size_t size;  // bytes
};
// The character `text` starts with, if it starts with a valid, shortest-form
// UTF-8 sequence of a Unicode scalar value (no surrogates, at most U+10FFFF).
std::optional<Utf8Char> decodeUtf8Char(std::string_view text);

}  // namespace sandpool::text
