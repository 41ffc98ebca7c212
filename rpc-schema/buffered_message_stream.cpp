#include "rpc-schema/buffered_message_stream.h"

#include <cstring>

#include <capnp/serialize.h>
#include <kj/debug.h>

namespace sandpool::wire {

namespace {

// capnp's own readers refuse more segments than this.
constexpr uint32_t kMaxSegments = 512;

kj::Own<capnp::MessageReader> readerOver(kj::Array<capnp::word> words,
                                         const capnp::ReaderOptions& options) {
  auto reader = kj::heap<capnp::FlatArrayMessageReader>(words, options);
  return reader.attach(kj::mv(words));
}

}  // namespace

BufferedMessageStream::BufferedMessageStream(kj::AsyncIoStream& stream)
    : stream_(stream),
      writer_(stream),
      buffer_(kj::heapArray<capnp::word>(kChunkBytes / sizeof(capnp::word))) {}

kj::Maybe<size_t> BufferedMessageStream::frontMessageWords(
    const capnp::ReaderOptions& options) const {
  const size_t words = bufferedBytes() / sizeof(capnp::word);
  if (words == 0) return nullptr;
  auto prefix = buffer_.slice(begin_ / sizeof(capnp::word), begin_ / sizeof(capnp::word) + words);
  uint32_t segments_minus_one;
  std::memcpy(&segments_minus_one, prefix.begin(), sizeof segments_minus_one);
  KJ_REQUIRE(segments_minus_one < kMaxSegments, "message has too many segments",
             segments_minus_one + 1ull);
  // A lower bound until the whole segment table is in (what of it arrived),
  // exact from then on; either way past the limit is past the limit.
  const size_t total = capnp::expectedSizeInWordsFromPrefix(prefix);
  KJ_REQUIRE(
      total <= options.traversalLimitInWords,
      "message is too large; to increase the limit on the receiving end, see capnp::ReaderOptions",
      total, options.traversalLimitInWords);
  const size_t table_words = (segments_minus_one + 1) / 2 + 1;
  if (words < table_words) return nullptr;
  return total;
}

kj::Own<capnp::MessageReader> BufferedMessageStream::takeFront(
    size_t total_words, const capnp::ReaderOptions& options) {
  const size_t first = begin_ / sizeof(capnp::word);
  // Copied bytewise: clang builds of capnp make `word` non-copyable.
  auto message = kj::heapArray<capnp::word>(total_words);
  std::memcpy(message.begin(), buffer_.begin() + first, total_words * sizeof(capnp::word));
  begin_ += total_words * sizeof(capnp::word);
  if (begin_ == end_) begin_ = end_ = 0;
  return readerOver(kj::mv(message), options);
}

kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> BufferedMessageStream::tryReadMessage(
    kj::ArrayPtr<kj::AutoCloseFd>, capnp::ReaderOptions options, kj::ArrayPtr<capnp::word>) {
  KJ_IF_MAYBE (total, frontMessageWords(options)) {
    const size_t bytes = *total * sizeof(capnp::word);
    if (bytes <= bufferedBytes()) {
      return kj::Maybe<capnp::MessageReaderAndFds>(
          capnp::MessageReaderAndFds{takeFront(*total, options), nullptr});
    }
    if (bytes > buffer_.asBytes().size()) return readLarge(*total, options);
  }
  // The unread part of a message moves to the front, so that a message that
  // fits the buffer always fits after what is buffered.
  if (begin_ > 0) {
    std::memmove(buffer_.asBytes().begin(), buffer_.asBytes().begin() + begin_, bufferedBytes());
    end_ -= begin_;
    begin_ = 0;
  }
  auto room = buffer_.asBytes().slice(end_, buffer_.asBytes().size());
  return stream_.tryRead(room.begin(), 1, room.size())
      .then([this, options](size_t n) -> kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> {
        if (n == 0) {
          if (bufferedBytes() == 0) return kj::Maybe<capnp::MessageReaderAndFds>(nullptr);
          return KJ_EXCEPTION(DISCONNECTED, "premature EOF inside a message");
        }
        end_ += n;
        return tryReadMessage(nullptr, options, nullptr);
      });
}

kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> BufferedMessageStream::readLarge(
    size_t total_words, capnp::ReaderOptions options) {
  auto message = kj::heapArray<capnp::word>(total_words);
  auto bytes = message.asBytes();
  const size_t have = bufferedBytes();
  std::memcpy(bytes.begin(), buffer_.asBytes().begin() + begin_, have);
  begin_ = end_ = 0;
  auto rest = bytes.slice(have, bytes.size());
  return stream_.read(rest.begin(), rest.size())
      .then([message = kj::mv(message), options]() mutable {
        return kj::Maybe<capnp::MessageReaderAndFds>(
            capnp::MessageReaderAndFds{readerOver(kj::mv(message), options), nullptr});
      });
}

kj::Promise<void> BufferedMessageStream::writeMessage(
    kj::ArrayPtr<const int> fds, kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) {
  return writer_.writeMessage(fds, segments);
}

kj::Promise<void> BufferedMessageStream::writeMessages(
    kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) {
  return writer_.writeMessages(messages);
}

kj::Maybe<int> BufferedMessageStream::getSendBufferSize() { return writer_.getSendBufferSize(); }

kj::Promise<void> BufferedMessageStream::end() { return writer_.end(); }

}  // namespace sandpool::wire
