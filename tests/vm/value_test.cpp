// Value encoding: round trips, and decoding that never trusts a length.
#include <gtest/gtest.h>

#include "vm/value.h"

namespace sandpool::vm {
namespace {

TEST(ValueTest, EveryTypeRoundTrips) {
  const std::vector<Value> values = {
      Void{}, int32_t{-7}, int64_t{-1} << 50,    uint32_t{7},     uint64_t{1} << 63, 1.25f,
      -2.5,   true,        std::string("héllo"), Bytes{0, 255, 3}};
  for (const Value& v : values) {
    std::vector<uint8_t> encoded;
    encodeValue(v, encoded);
    EXPECT_EQ(encoded.size(), encodedSize(v));
    std::span<const uint8_t> in(encoded);
    auto decoded = decodeValue(in);
    ASSERT_TRUE(decoded.ok()) << decoded.error().message;
    EXPECT_EQ(*decoded, v);
    EXPECT_TRUE(in.empty());
  }
}

TEST(ValueTest, LengthPastTheEndIsRefused) {
  std::vector<uint8_t> encoded = {8, 0xff, 0xff, 0xff, 0x7f, 'a'};
  std::span<const uint8_t> in(encoded);
  auto decoded = decodeValue(in);
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.error().message.find("exceeds"), std::string::npos);
}

TEST(ValueTest, UnknownTagIsRefused) {
  std::vector<uint8_t> encoded = {42};
  std::span<const uint8_t> in(encoded);
  EXPECT_FALSE(decodeValue(in).ok());
}

TEST(ValueTest, ParsesTextForEachType) {
  EXPECT_EQ(*parseValue(ValueType::kI32, "-12"), Value(int32_t{-12}));
  EXPECT_EQ(*parseValue(ValueType::kBool, "true"), Value(true));
  EXPECT_EQ(*parseValue(ValueType::kBytes, "0x00ff"), Value(Bytes{0, 255}));
  EXPECT_FALSE(parseValue(ValueType::kU32, "-1").ok());
  EXPECT_FALSE(parseValue(ValueType::kI32, "12abc").ok());
  EXPECT_FALSE(parseValue(ValueType::kBytes, "0xabc").ok());
}

TEST(ValueTest, UnparsableTextIsQuotedInTheError) {
  auto message = [](ValueType type, std::string_view text) {
    auto parsed = parseValue(type, text);
    EXPECT_FALSE(parsed.ok());
    EXPECT_EQ(parsed ? ErrorKind::kInternal : parsed.error().kind, ErrorKind::kBadArguments);
    return parsed ? std::string() : parsed.error().message;
  };
  EXPECT_EQ(message(ValueType::kU32, "-1"), "'-1' is not a valid u32");
  EXPECT_EQ(message(ValueType::kF64, "1.5x"), "'1.5x' is not a valid f64");
  EXPECT_EQ(message(ValueType::kBool, "yes"), "'yes' is not a bool (true/false)");
  EXPECT_EQ(message(ValueType::kBytes, "0xzz"), "'0xzz' is not hex bytes");
}

}  // namespace
}  // namespace sandpool::vm
