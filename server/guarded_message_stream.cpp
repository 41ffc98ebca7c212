#include "server/guarded_message_stream.h"

#include <capnp/serialize.h>
#include <fmt/format.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>

namespace sandpool::server {

namespace {

uint64_t messageBytes(capnp::MessageReader& reader) {
  uint64_t words = 0;
  for (uint32_t i = 0;; ++i) {
    auto segment = reader.getSegment(i);
    if (segment == nullptr) break;
    words += segment.size();
  }
  return words * sizeof(capnp::word);
}

}  // namespace

GuardedMessageStream::GuardedMessageStream(capnp::MessageStream& inner, const MessageLimits& limits,
                                           ConnectionStatus& status, kj::Timer& timer,
                                           std::string peer)
    : inner_(inner), limits_(limits), status_(status), timer_(timer), peer_(std::move(peer)) {}

kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> GuardedMessageStream::tryReadMessage(
    kj::ArrayPtr<kj::AutoCloseFd> fd_space, capnp::ReaderOptions options,
    kj::ArrayPtr<capnp::word> scratch) {
  options.traversalLimitInWords =
      status_.logged_in ? limits_.message_words : limits_.login_message_words;
  return inner_.tryReadMessage(fd_space, options, scratch)
      .then(
          [this](kj::Maybe<capnp::MessageReaderAndFds>&& message) {
            KJ_IF_MAYBE (m, message) {
              admit(*m->reader);
            }
            return kj::mv(message);
          },
          [this](kj::Exception&& e) -> kj::Maybe<capnp::MessageReaderAndFds> {
            spdlog::warn("event=connection_error peer={} logged_in={} error=\"{}\"", peer_,
                         status_.logged_in, e.getDescription().cStr());
            kj::throwFatalException(kj::mv(e));
          });
}

void GuardedMessageStream::admit(capnp::MessageReader& reader) {
  status_.last_message = timer_.now();
  status_.largest_message_bytes = std::max(status_.largest_message_bytes, messageBytes(reader));
  auto message = reader.getRoot<capnp::rpc::Message>();
  switch (message.which()) {
    case capnp::rpc::Message::BOOTSTRAP: ++status_.calls_unanswered; break;
    case capnp::rpc::Message::CALL:
      ++status_.calls_unanswered;
      admitCaps(message.getCall().getParams().getCapTable());
      break;
    case capnp::rpc::Message::RETURN:
      if (message.getReturn().isResults())
        admitCaps(message.getReturn().getResults().getCapTable());
      break;
    case capnp::rpc::Message::RESOLVE:
      if (message.getResolve().isCap()) admitCap(message.getResolve().getCap());
      break;
    default: break;
  }
}

void GuardedMessageStream::admitCaps(capnp::List<capnp::rpc::CapDescriptor>::Reader caps) {
  if (caps.size() > limits_.max_caps_per_message) {
    refuse(fmt::format("{} capabilities in one message, at most {}", caps.size(),
                       limits_.max_caps_per_message));
  }
  for (auto cap : caps) admitCap(cap);
}

void GuardedMessageStream::admitCap(capnp::rpc::CapDescriptor::Reader cap) {
  // The descriptors that make capnp import a capability of the peer (a
  // third-party capability is imported through its vine).
  uint32_t id;
  switch (cap.which()) {
    case capnp::rpc::CapDescriptor::SENDER_HOSTED: id = cap.getSenderHosted(); break;
    case capnp::rpc::CapDescriptor::SENDER_PROMISE: id = cap.getSenderPromise(); break;
    case capnp::rpc::CapDescriptor::THIRD_PARTY_HOSTED:
      id = cap.getThirdPartyHosted().getVineId();
      break;
    default: return;
  }
  auto [entry, added] = imports_.try_emplace(id, 0);
  if (added && imports_.size() > limits_.max_imports) {
    refuse(
        fmt::format("more than {} capabilities lent to the server at once", limits_.max_imports));
  }
  ++entry->second;
}

void GuardedMessageStream::refuse(const std::string& reason) {
  spdlog::warn("event=message_refused peer={} logged_in={} reason=\"{}\"", peer_, status_.logged_in,
               reason);
  kj::throwFatalException(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                                        kj::str("message refused: ", reason.c_str())));
}

void GuardedMessageStream::sent(kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) {
  status_.last_message = timer_.now();
  capnp::SegmentArrayMessageReader reader(segments);
  auto message = reader.getRoot<capnp::rpc::Message>();
  switch (message.which()) {
    case capnp::rpc::Message::RETURN:
      if (status_.calls_unanswered > 0) --status_.calls_unanswered;
      break;
    case capnp::rpc::Message::RELEASE: {
      auto release = message.getRelease();
      auto entry = imports_.find(release.getId());
      if (entry == imports_.end()) break;
      if (entry->second <= release.getReferenceCount()) {
        imports_.erase(entry);
      } else {
        entry->second -= release.getReferenceCount();
      }
      break;
    }
    default: break;
  }
}

kj::Promise<void> GuardedMessageStream::writeMessage(
    kj::ArrayPtr<const int> fds, kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) {
  sent(segments);
  return inner_.writeMessage(fds, segments);
}

kj::Promise<void> GuardedMessageStream::writeMessages(
    kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) {
  for (auto segments : messages) sent(segments);
  return inner_.writeMessages(messages);
}

kj::Maybe<int> GuardedMessageStream::getSendBufferSize() { return inner_.getSendBufferSize(); }

kj::Promise<void> GuardedMessageStream::end() { return inner_.end(); }

}  // namespace sandpool::server
