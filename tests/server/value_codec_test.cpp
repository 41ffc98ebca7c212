// rpc-schema/value_codec and the CLI's value arguments: every value type
// crosses the wire form and back unchanged, and the CLI reads and prints the
// text form of vm/value_text.h (strings quoted and escaped for a terminal).
#include <gtest/gtest.h>

#include <capnp/message.h>

#include "clients/cpp/client.h"
#include "rpc-schema/value_codec.h"
#include "vm/value_text.h"

namespace sandpool {
namespace {

const std::vector<vm::Value> kEveryType = {
    vm::Void{}, int32_t{-7}, int64_t{-1} << 50,    uint32_t{4294967295}, uint64_t{1} << 63, 0.1f,
    -2.5,       true,        std::string("héllo"), vm::Bytes{0, 255, 3}};

TEST(ValueCodecTest, EveryTypeCrossesTheWireUnchanged) {
  for (const vm::Value& value : kEveryType) {
    capnp::MallocMessageBuilder message;
    auto wire = message.initRoot<rpc::Value>();
    rpc::toRpc(value, wire);
    EXPECT_EQ(rpc::fromRpc(wire.asReader()), value) << vm::formatValue(value);
    EXPECT_EQ(rpc::fromRpc(rpc::toRpc(vm::typeOf(value))), vm::typeOf(value));
  }
}

TEST(ValueCodecTest, CliArgumentsReadTheTextForm) {
  for (const vm::Value& value : kEveryType) {
    capnp::MallocMessageBuilder message;
    auto wire = message.initRoot<rpc::Value>();
    const auto type = rpc::toRpc(vm::typeOf(value));
    ASSERT_EQ(client::parseValue(type, vm::formatValue(value), wire), std::nullopt);
    EXPECT_EQ(rpc::fromRpc(wire.asReader()), value) << vm::formatValue(value);
  }
  capnp::MallocMessageBuilder message;
  auto wire = message.initRoot<rpc::Value>();
  EXPECT_EQ(client::parseValue(rpc::ValueType::U32, "0xff", wire), std::nullopt);
  EXPECT_EQ(wire.getU32(), 255u);
  EXPECT_EQ(client::parseValue(rpc::ValueType::I32, "99999999999", wire),
            "'99999999999' is not a valid i32");
}

TEST(ValueCodecTest, CliPrintsStringsQuotedAndEscaped) {
  capnp::MallocMessageBuilder message;
  auto wire = message.initRoot<rpc::Value>();
  wire.setString("a\x1b[2J\"b\"");
  EXPECT_EQ(client::formatValue(wire.asReader()), "\"a\\x1b[2J\\\"b\\\"\"");
  wire.setF64(42.5);
  EXPECT_EQ(client::formatValue(wire.asReader()), "42.5");
  wire.setBytes(kj::arrayPtr(reinterpret_cast<const uint8_t*>("\x00\xff"), 2));
  EXPECT_EQ(client::formatValue(wire.asReader()), "0x00ff");
}

}  // namespace
}  // namespace sandpool
