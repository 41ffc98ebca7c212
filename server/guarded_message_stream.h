// The capnp message stream of one server-side connection, wrapped so that a
// peer cannot make the server allocate without bound, whatever it sends:
//
// - until the connection has logged in, messages are read only up to a
//   small size (the login limit); after it, up to the full RPC limit (sized
//   for the largest upload);
// - a message may carry at most `max_caps_per_message` capability
//   descriptors: capnp builds a client object for every entry of a
//   message's capability table before any method sees it, so one 15 MiB
//   message of a million entries would otherwise cost the server gigabytes;
// - the peer may have lent the server at most `max_imports` distinct
//   capabilities at once (counted from the capability descriptors it sends
//   and the Release messages the server sends back, the same reference
//   counts capnp keeps).
//
// A message past a limit is refused before the RPC system sees it: the read
// fails, the RPC system aborts the connection (the client sees DISCONNECTED
// with the reason) and the refusal is logged. The stream also keeps the
// connection's ConnectionStatus current (activity, calls unanswered,
// largest message) for the listener.
//
// Thread: the KJ thread that owns the connection.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

#include <capnp/rpc.capnp.h>
#include <capnp/serialize-async.h>
#include <kj/timer.h>

#include "server/connection_status.h"

namespace sandpool::server {

struct MessageLimits {
  uint64_t login_message_words;  // before the connection has logged in
  uint64_t message_words;        // after; also the traversal limit
  uint32_t max_caps_per_message;
  uint32_t max_imports;
};

class GuardedMessageStream final : public capnp::MessageStream {
 public:
  // `inner`, `status` and `timer` must outlive this stream; `peer` names the
  // connection in the log.
  GuardedMessageStream(capnp::MessageStream& inner, const MessageLimits& limits,
                       ConnectionStatus& status, kj::Timer& timer, std::string peer);

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

 private:
  // Checks and counts one message from the peer; throws past a limit.
  void admit(capnp::MessageReader& reader);
  void admitCaps(capnp::List<capnp::rpc::CapDescriptor>::Reader caps);
  void admitCap(capnp::rpc::CapDescriptor::Reader cap);
  // Notes one message to the peer: its Returns and Releases.
  void sent(kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments);
  [[noreturn]] void refuse(const std::string& reason);

  capnp::MessageStream& inner_;
  const MessageLimits& limits_;
  ConnectionStatus& status_;
  kj::Timer& timer_;
  std::string peer_;
  // Import id -> references the peer has sent and the server not released.
  std::unordered_map<uint32_t, uint64_t> imports_;
};

}  // namespace sandpool::server
