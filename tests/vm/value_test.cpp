// Value encoding: round trips, and decoding that never trusts a length.
#include <gtest/gtest.h>

#include "vm/value.h"

namespace sandpool::vm {
namespace {

TEST(ValueTest, EveryTypeRoundTrips) {
  const std::vector<Value> values = {Void{},  int32_t{-7}, int64_t{-1} << 50, uint32_t{7}, uint64_t{1} << 63,
                                     1.25f,   -2.5,        true,              std::string("héllo"),
                                     Bytes{0, 255, 3}};
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

}  // namespace
}  // namespace sandpool::vm
