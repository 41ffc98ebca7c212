// decodeValue on arbitrary bytes, as the host decodes a guest's result and
// its host-call arguments: values are decoded from the front until the
// input is used up or one is refused (kBadHostCall). Each decoded value
// re-encodes to exactly the bytes it came from (the encoding has one form
// per value), and its text form (formatValue, the CLI's and logs') parses
// back to the same value with parseValue.
#include <cmath>
#include <cstdint>
#include <span>
#include <variant>
#include <vector>

#include "tests/fuzz/fuzz_check.h"
#include "vm/value.h"
#include "vm/value_text.h"

using namespace sandpool::vm;
using sandpool::fuzz::require;

namespace {

bool isNan(const Value& value) {
  if (auto* f = std::get_if<float>(&value)) return std::isnan(*f);
  if (auto* d = std::get_if<double>(&value)) return std::isnan(*d);
  return false;
}

void checkRoundTrips(const Value& value, std::span<const uint8_t> encoded) {
  std::vector<uint8_t> again;
  encodeValue(value, again);
  require(again.size() == encodedSize(value), "encodedSize() is what encodeValue() appends");
  require(std::equal(again.begin(), again.end(), encoded.begin(), encoded.end()),
          "a decoded value re-encodes to the bytes it was decoded from");

  auto parsed = parseValue(typeOf(value), formatValue(value));
  require(parsed.ok(), "formatValue() text parses back");
  // NaN payloads do not survive text ("nan"); every other value does.
  if (isNan(value)) {
    require(isNan(*parsed), "NaN formats and parses as NaN");
  } else {
    std::vector<uint8_t> reparsed;
    encodeValue(*parsed, reparsed);
    require(reparsed == again, "formatValue() text parses back to the same value");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  while (!in.empty()) {
    const std::span<const uint8_t> before = in;
    auto value = decodeValue(in);
    if (!value) {
      require(value.error().kind == ErrorKind::kBadHostCall,
              "a refused encoding is a bad host call");
      break;
    }
    require(in.size() < before.size() && in.data() == before.data() + (before.size() - in.size()),
            "decoding consumes bytes from the front only");
    checkRoundTrips(*value, before.first(before.size() - in.size()));
  }
  return 0;
}
