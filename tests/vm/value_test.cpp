// Values: binary round trips, decoding that never trusts a length, and the text form.
#include <gtest/gtest.h>

#include "vm/value.h"
#include "vm/value_text.h"

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

TEST(ValueTextTest, EveryTypeRoundTripsThroughText) {
  const std::vector<Value> values = {Void{},
                                     int32_t{-2147483647 - 1},
                                     int64_t{-1} << 50,
                                     uint32_t{4294967295},
                                     uint64_t{1} << 63,
                                     0.1f,
                                     -2.5e-300,
                                     false,
                                     std::string("héllo: a \"b\"\n"),
                                     Bytes{0, 255, 3}};
  for (const Value& v : values) {
    const std::string text = formatValue(v);
    auto parsed = parseValue(typeOf(v), text);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.error().message;
    EXPECT_EQ(*parsed, v) << text;
  }
  EXPECT_EQ(formatValue(Value(0.1f)), "0.1");
  EXPECT_EQ(formatValue(Value(Bytes{0, 255})), "0x00ff");
}

TEST(ValueTextTest, IntegersTakeHexWithPrefix) {
  EXPECT_EQ(*parseValue(ValueType::kU32, "0xffffffff"), Value(uint32_t{4294967295}));
  EXPECT_EQ(*parseValue(ValueType::kI64, "0X10"), Value(int64_t{16}));
  EXPECT_EQ(parseValue(ValueType::kU32, "0x100000000").error().message,
            "'0x100000000' is not a valid u32");
  EXPECT_FALSE(parseValue(ValueType::kI32, "0x").ok());
}

TEST(ValueTextTest, TypedTextNamesItsType) {
  EXPECT_EQ(*parseTypedValue("i32:5"), Value(int32_t{5}));
  EXPECT_EQ(*parseTypedValue("string:a:b"), Value(std::string("a:b")));
  EXPECT_EQ(*parseTypedValue("bytes:0x00ff"), Value(Bytes{0, 255}));
  auto no_type = parseTypedValue("5");
  ASSERT_FALSE(no_type.ok());
  EXPECT_EQ(no_type.error().kind, ErrorKind::kBadArguments);
  EXPECT_EQ(no_type.error().message,
            "'5' is not TYPE:VALUE (types: i32 i64 u32 u64 f32 f64 bool string bytes)");
  EXPECT_FALSE(parseTypedValue("int:5").ok());
  EXPECT_EQ(parseTypedValue("u32:-1").error().message, "'-1' is not a valid u32");
}

}  // namespace
}  // namespace sandpool::vm
