#include "server/rpc_listener.h"

#include <capnp/rpc-twoparty.h>
#include <spdlog/spdlog.h>

#include "rpc-schema/buffered_message_stream.h"

namespace sandpool::server {

struct RpcListener::Connection {
  Connection(kj::Own<kj::AsyncIoStream>&& s, capnp::ReaderOptions options,
             capnp::Capability::Client bootstrap, size_t flow_limit_words)
      : stream(kj::mv(s)),
        messages(*stream),
        network(messages, capnp::rpc::twoparty::Side::SERVER, options),
        rpc(capnp::makeRpcServer(network, kj::mv(bootstrap))) {
    rpc.setFlowLimit(flow_limit_words);
  }

  kj::Own<kj::AsyncIoStream> stream;
  wire::BufferedMessageStream messages;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

RpcListener::RpcListener(ServiceContext& ctx, kj::Network& network,
                         capnp::ReaderOptions reader_options, size_t flow_limit_words,
                         uint32_t max_connections)
    : ctx_(ctx),
      network_(network),
      reader_options_(reader_options),
      flow_limit_words_(flow_limit_words),
      max_connections_(max_connections),
      accepting_(kj::heap<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this))),
      connections_tasks_(kj::heap<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this))) {}

RpcListener::~RpcListener() = default;

kj::Promise<std::string> RpcListener::listen(const std::string& address) {
  return network_.parseAddress(address).then([this, address](kj::Own<kj::NetworkAddress> parsed) {
    kj::Own<kj::ConnectionReceiver> receiver = parsed->listen();
    std::string bound = address;
    if (address.rfind("unix:", 0) != 0) {
      std::string host = address.substr(0, address.rfind(':'));
      bound = host + ":" + std::to_string(receiver->getPort());
    }
    auto& ref = *receiver;
    accepting_->add(acceptLoop(ref).attach(kj::mv(receiver)));
    return bound;
  });
}

kj::Promise<void> RpcListener::acceptLoop(kj::ConnectionReceiver& receiver) {
  return receiver.acceptAuthenticated().then([this, &receiver](kj::AuthenticatedStream&& accepted) {
    std::string peer = accepted.peerIdentity->toString().cStr();
    if (connections_ >= max_connections_) {
      // Closing at once (the stream is dropped here) bounds what
      // unauthenticated peers can hold: every connection costs buffers.
      spdlog::warn("event=connection_refused peer={} reason=\"{} connections already\"", peer, connections_);
      return acceptLoop(receiver);
    }
    capnp::Capability::Client bootstrap = kj::heap<SandpoolImpl>(ctx_, peer);
    auto conn = kj::heap<Connection>(kj::mv(accepted.stream), reader_options_, kj::mv(bootstrap),
                                     flow_limit_words_);
    ++connections_;
    spdlog::debug("event=connect peer={} connections={}", peer, connections_);
    auto disconnected = conn->network.onDisconnect();
    connections_tasks_->add(disconnected.attach(kj::mv(conn), kj::defer([this, peer] {
      --connections_;
      spdlog::debug("event=disconnect peer={} connections={}", peer, connections_);
    })));
    return acceptLoop(receiver);
  });
}

void RpcListener::stopAccepting() { accepting_ = kj::heap<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this)); }

void RpcListener::closeConnections() { connections_tasks_ = kj::heap<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this)); }

void RpcListener::taskFailed(kj::Exception&& exception) {
  // A connection that broke (a client sent an oversized message, vanished,
  // ...) ends here; the server serves on.
  spdlog::info("event=connection_error error=\"{}\"", exception.getDescription().cStr());
}

}  // namespace sandpool::server
