// rpc-schema/buffered_message_stream: capnp messages over a real socket pair,
// written in bursts, split, oversized and cut short.
#include <cstring>
#include <vector>

#include <capnp/message.h>
#include <capnp/serialize-async.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>

#include "rpc-schema/sandpool.capnp.h"
#include "rpc-schema/buffered_message_stream.h"

namespace sandpool::wire {
namespace {

// A message whose body is a Value holding `size` bytes of `fill`.
kj::Array<capnp::word> bytesMessage(size_t size, uint8_t fill,
                                    uint32_t first_segment_words = 1024) {
  capnp::MallocMessageBuilder builder(first_segment_words, capnp::AllocationStrategy::FIXED_SIZE);
  auto data = builder.initRoot<rpc::Value>().initBytes(static_cast<unsigned>(size));
  std::memset(data.begin(), fill, size);
  return capnp::messageToFlatArray(builder);
}

void expectBytes(capnp::MessageReader& reader, size_t size, uint8_t fill) {
  auto value = reader.getRoot<rpc::Value>();
  ASSERT_TRUE(value.isBytes());
  auto data = value.getBytes();
  ASSERT_EQ(data.size(), size);
  for (auto b : data) ASSERT_EQ(b, fill);
}

class BufferedMessageStreamTest : public ::testing::Test {
 protected:
  ~BufferedMessageStreamTest() noexcept override {}

  void write(std::vector<kj::ArrayPtr<const capnp::word>> messages) {
    std::vector<capnp::word> all;
    for (auto m : messages) all.insert(all.end(), m.begin(), m.end());
    pipe_.ends[0]->write(all.data(), all.size() * sizeof(capnp::word)).wait(io_.waitScope);
  }
  kj::Own<capnp::MessageReader> read(capnp::ReaderOptions options = {}) {
    auto message = stream_.tryReadMessage(nullptr, options, nullptr).wait(io_.waitScope);
    return kj::mv(KJ_REQUIRE_NONNULL(message, "end of stream where a message was expected").reader);
  }

  kj::AsyncIoContext io_ = kj::setupAsyncIo();
  kj::TwoWayPipe pipe_ = io_.provider->newTwoWayPipe();
  BufferedMessageStream stream_{*pipe_.ends[1]};
};

TEST_F(BufferedMessageStreamTest, ABurstOfMessagesArrivesWholeAndInOrder) {
  std::vector<kj::Array<capnp::word>> messages;
  for (uint8_t i = 0; i < 20; ++i) messages.push_back(bytesMessage(1 + i * 37, i));
  std::vector<kj::ArrayPtr<const capnp::word>> views;
  for (auto& m : messages) views.push_back(m);
  write(views);
  for (uint8_t i = 0; i < 20; ++i) expectBytes(*read(), 1 + i * 37, i);
}

TEST_F(BufferedMessageStreamTest, MessagesLargerThanTheBufferAndManySegmentsArriveWhole) {
  auto small = bytesMessage(10, 1);
  auto large = bytesMessage(3 * BufferedMessageStream::kChunkBytes + 5, 2);
  auto segmented = bytesMessage(5000, 3, 16);  // a 16-word first segment forces a second one
  ASSERT_GT(segmented.asBytes()[0], 0) << "the message should have more than one segment";
  // The sender blocks on a full socket until the reader drains it.
  auto writing =
      pipe_.ends[0]
          ->write(small.begin(), small.asBytes().size())
          .then([&] { return pipe_.ends[0]->write(large.begin(), large.asBytes().size()); })
          .then([&] { return pipe_.ends[0]->write(segmented.begin(), segmented.asBytes().size()); })
          .eagerlyEvaluate(nullptr);
  expectBytes(*read(), 10, 1);
  expectBytes(*read(), 3 * BufferedMessageStream::kChunkBytes + 5, 2);
  expectBytes(*read(), 5000, 3);
  writing.wait(io_.waitScope);
}

TEST_F(BufferedMessageStreamTest, AMessagePastTheLimitFailsOnItsSegmentTable) {
  auto large = bytesMessage(64 * 1024, 4);
  ASSERT_EQ(large.asBytes()[0], 1) << "the message should have two segments";
  // Only the segment table (two words) is sent: the sizes alone must refuse
  // the message.
  pipe_.ends[0]->write(large.begin(), 2 * sizeof(capnp::word)).wait(io_.waitScope);
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 1024;
  auto failure = kj::runCatchingExceptions([&] { read(options); });
  KJ_IF_MAYBE (e, failure) {
    EXPECT_NE(std::string(e->getDescription().cStr()).find("too large"), std::string::npos)
        << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "a message past the traversal limit was read";
  }
}

TEST_F(BufferedMessageStreamTest, EndOfStreamBetweenMessagesIsCleanAndInsideOneIsAnError) {
  auto message = bytesMessage(100, 5);
  write({message});
  pipe_.ends[0]->shutdownWrite();
  expectBytes(*read(), 100, 5);
  EXPECT_EQ(stream_.tryReadMessage(nullptr, {}, nullptr).wait(io_.waitScope), nullptr);

  auto pipe = io_.provider->newTwoWayPipe();
  BufferedMessageStream cut(*pipe.ends[1]);
  pipe.ends[0]->write(message.begin(), message.asBytes().size() - 8).wait(io_.waitScope);
  pipe.ends[0]->shutdownWrite();
  auto failure = kj::runCatchingExceptions(
      [&] { cut.tryReadMessage(nullptr, {}, nullptr).wait(io_.waitScope); });
  KJ_IF_MAYBE (e, failure) {
    EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED) << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "a message cut short was read";
  }
}

}  // namespace
}  // namespace sandpool::wire
