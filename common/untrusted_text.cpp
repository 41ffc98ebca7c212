#include "common/untrusted_text.h"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

namespace sandpool::text {

namespace {

constexpr char kHex[] = "0123456789abcdef";

std::string hexEscape(uint8_t byte) { return {'\\', 'x', kHex[byte >> 4], kHex[byte & 15]}; }

std::string codePointEscape(char32_t c) {
  return {'\\', 'u', kHex[(c >> 12) & 15], kHex[(c >> 8) & 15], kHex[(c >> 4) & 15], kHex[c & 15]};
}

// Characters that move the cursor, start a terminal escape sequence, break
// a line in some viewers or reorder what is displayed.
bool isFormatting(char32_t c) {
  return (c >= 0x80 && c <= 0x9f) || c == 0x2028 || c == 0x2029 || (c >= 0x202a && c <= 0x202e) ||
         (c >= 0x2066 && c <= 0x2069);
}

// How the character at the start of `text` is written, and how many bytes
// of `text` that covers.
std::pair<std::string, size_t> escapeOne(std::string_view text, Escape how) {
  const auto byte = static_cast<uint8_t>(text[0]);
  if (byte < 0x80) {
    const char c = text[0];
    if (how == Escape::kText && (c == '\n' || c == '\t')) return {std::string(1, c), 1};
    switch (c) {
      case '\n': return {"\\n", 1};
      case '\r': return {"\\r", 1};
      case '\t': return {"\\t", 1};
      case '\\':
      case '"': return {how == Escape::kQuoted ? std::string{'\\', c} : std::string(1, c), 1};
      default: return {byte < 0x20 || byte == 0x7f ? hexEscape(byte) : std::string(1, c), 1};
    }
  }
  std::optional<Utf8Char> decoded = decodeUtf8Char(text);
  if (!decoded) return {hexEscape(byte), 1};
  if (isFormatting(decoded->code_point))
    return {codePointEscape(decoded->code_point), decoded->size};
  return {std::string(text.substr(0, decoded->size)), decoded->size};
}

}  // namespace

std::optional<Utf8Char> decodeUtf8Char(std::string_view text) {
  if (text.empty()) return std::nullopt;
  const auto lead = static_cast<uint8_t>(text[0]);
  size_t size;
  char32_t c, smallest;
  if (lead < 0x80) return Utf8Char{lead, 1};
  if ((lead & 0xe0) == 0xc0) {
    size = 2, c = lead & 0x1f, smallest = 0x80;
  } else if ((lead & 0xf0) == 0xe0) {
    size = 3, c = lead & 0x0f, smallest = 0x800;
  } else if ((lead & 0xf8) == 0xf0) {
    size = 4, c = lead & 0x07, smallest = 0x10000;
  } else {
    return std::nullopt;
  }
  if (text.size() < size) return std::nullopt;
  for (size_t i = 1; i < size; ++i) {
    const auto next = static_cast<uint8_t>(text[i]);
    if ((next & 0xc0) != 0x80) return std::nullopt;
    c = (c << 6) | (next & 0x3f);
  }
  if (c < smallest || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return std::nullopt;
  return Utf8Char{c, size};
}

std::string escapeUntrusted(std::string_view text, Escape how, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes));
  for (size_t at = 0; at < text.size();) {
    auto [written, consumed] = escapeOne(text.substr(at), how);
    if (written.size() > max_bytes - out.size()) {
      return fmt::format("{}...[truncated, {} bytes in all]", out, text.size());
    }
    out += written;
    at += consumed;
  }
  return out;
}

}  // namespace sandpool::text
