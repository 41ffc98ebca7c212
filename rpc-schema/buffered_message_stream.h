// The capnp message stream of one connection, server's or client's: reads
// the socket in large chunks and takes every whole message out of what
// arrived, where
// capnp's own AsyncIoMessageStream reads each message with three or four
// read() calls (first word, segment table, body, then one that finds the
// socket empty).
//
// Why it matters more than the system calls: on a Unix socket every read()
// that consumes a message frees room in the sender's buffer, and the kernel
// wakes the sender if it waits in epoll for writability, as KJ peers do.
// A client waiting for replies was woken once per request the server read;
// reading a burst of requests in one call wakes it at most once.
//
// Messages are checked against the reader options' traversal limit from
// their segment table, before their body is read: a peer cannot make the
// reader buffer a message past the limit. Writes go straight to the
// socket, as with capnp's stream.
//
// Thread: the KJ thread that owns the connection.
#pragma once

#include <capnp/serialize-async.h>
#include <kj/async-io.h>

namespace sandpool::wire {

class BufferedMessageStream final : public capnp::MessageStream {
 public:
  explicit BufferedMessageStream(kj::AsyncIoStream& stream);

  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> tryReadMessage(
      kj::ArrayPtr<kj::AutoCloseFd> fd_space, capnp::ReaderOptions options,
      kj::ArrayPtr<capnp::word> scratch) override;
  kj::Promise<void> writeMessage(
      kj::ArrayPtr<const int> fds,
      kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) override;
  kj::Promise<void> writeMessages(
      kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) override;
  kj::Maybe<int> getSendBufferSize() override;
  kj::Promise<void> end() override;

  // Bytes read from the socket at most per read() call.
  static constexpr size_t kChunkBytes = 64 * 1024;

 private:
  // The size of the message at the front of the buffer, once its segment
  // table is in. Throws past the traversal limit or capnp's segment limit.
  kj::Maybe<size_t> frontMessageWords(const capnp::ReaderOptions& options) const;
  // Takes the whole message of `total_words` at the front of the buffer out
  // of it.
  kj::Own<capnp::MessageReader> takeFront(size_t total_words, const capnp::ReaderOptions& options);
  // Reads a message too large for the buffer straight into its own array.
  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> readLarge(size_t total_words,
                                                               capnp::ReaderOptions options);
  size_t bufferedBytes() const { return end_ - begin_; }

  kj::AsyncIoStream& stream_;
  capnp::AsyncIoMessageStream writer_;
  // Word-aligned, and begin_ always sits on a message boundary, so every
  // message starts word-aligned.
  kj::Array<capnp::word> buffer_;
  size_t begin_ = 0;  // bytes
  size_t end_ = 0;    // bytes
};

}  // namespace sandpool::wire
