#include "server/rpc_listener.h"

#include <malloc.h>

#include <algorithm>

#include <capnp/rpc-twoparty.h>
#include <spdlog/spdlog.h>

#include "rpc-schema/buffered_message_stream.h"

namespace sandpool::server {

namespace {

// A message this large was read into a buffer of its own. glibc keeps freed
// heap memory for reuse, so once a connection that read one is gone the
// server hands the free memory back to the system: an idle server should
// not sit on the peak of the largest message it ever read.
constexpr uint64_t kReleaseMemoryAfterMessageBytes = 1ull << 20;

struct ReleaseMemoryAfterLargeMessages {
  const ConnectionStatus& status;
  ~ReleaseMemoryAfterLargeMessages() {
    if (status.largest_message_bytes >= kReleaseMemoryAfterMessageBytes) ::malloc_trim(0);
  }
};

// The peer as the per-peer limit counts it: its uid on the Unix socket, its
// IP address (without the port) on TCP.
std::string peerKey(kj::PeerIdentity& identity) {
  if (auto* local = dynamic_cast<kj::LocalPeerIdentity*>(&identity)) {
    KJ_IF_MAYBE (uid, local->getCredentials().uid) {
      return "uid:" + std::to_string(*uid);
    }
    return "uid:unknown";
  }
  if (auto* remote = dynamic_cast<kj::NetworkPeerIdentity*>(&identity)) {
    std::string address = remote->getAddress().toString().cStr();
    return "ip:" + address.substr(0, address.rfind(':'));
  }
  return identity.toString().cStr();
}

capnp::ReaderOptions readerOptions(const MessageLimits& limits) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = limits.message_words;
  return options;
}

}  // namespace

struct RpcListener::Connection {
  Connection(RpcListener& owner, kj::Own<kj::AsyncIoStream>&& s, std::string peer_name,
             std::string peer_key)
      : listener(owner),
        peer(std::move(peer_name)),
        key(std::move(peer_key)),
        accepted_at(owner.timer_.now()),
        status(kj::refcounted<ConnectionStatus>(accepted_at)),
        release_memory{*status},
        stream(kj::mv(s)),
        messages(*stream),
        guarded(messages, owner.limits_.messages, *status, owner.timer_, peer),
        network(guarded, capnp::rpc::twoparty::Side::SERVER, readerOptions(owner.limits_.messages)),
        rpc(capnp::makeRpcServer(network, owner.make_bootstrap_(peer, kj::addRef(*status)))) {
    rpc.setFlowLimit(owner.limits_.flow_limit_words);
  }
  ~Connection() { listener.forget(*this); }

  RpcListener& listener;
  const std::string peer;
  const std::string key;  // for the per-peer limit
  const kj::TimePoint accepted_at;
  kj::Own<ConnectionStatus> status;
  // Declared before the parts that allocate, so it runs after they are freed.
  ReleaseMemoryAfterLargeMessages release_memory;
  kj::Own<kj::AsyncIoStream> stream;
  wire::BufferedMessageStream messages;
  GuardedMessageStream guarded;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
  // Fulfilled to close the connection before its peer does.
  kj::Own<kj::PromiseFulfiller<void>> close;
  // Where it is in open_, until forget().
  kj::Maybe<std::list<Connection*>::iterator> position;
};

RpcListener::RpcListener(BootstrapFactory make_bootstrap, kj::Network& network, kj::Timer& timer,
                         const ConnectionLimits& limits)
    : make_bootstrap_(std::move(make_bootstrap)),
      network_(network),
      timer_(timer),
      limits_(limits),
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
    admit(kj::mv(accepted));
    return acceptLoop(receiver);
  });
}

void RpcListener::admit(kj::AuthenticatedStream&& accepted) {
  // A refused connection is closed at once (its stream is dropped here):
  // every open connection costs buffers.
  std::string peer = accepted.peerIdentity->toString().cStr();
  std::string key = peerKey(*accepted.peerIdentity);
  auto from_peer = open_per_peer_.find(key);
  if (from_peer != open_per_peer_.end() && from_peer->second >= limits_.max_connections_per_peer) {
    spdlog::warn(
        "event=connection_refused peer={} reason=\"{} connections from this peer already\"", peer,
        from_peer->second);
    return;
  }
  if (open_.size() >= limits_.max_connections && !evictOneNotLoggedIn()) {
    spdlog::warn(
        "event=connection_refused peer={} reason=\"{} connections already, all logged in\"", peer,
        open_.size());
    return;
  }
  auto conn = kj::heap<Connection>(*this, kj::mv(accepted.stream), peer, key);
  auto close = kj::newPromiseAndFulfiller<void>();
  conn->close = kj::mv(close.fulfiller);
  conn->position = open_.insert(open_.end(), conn.get());
  ++open_per_peer_[key];
  spdlog::debug("event=connect peer={} connections={}", peer, open_.size());
  auto& ref = *conn;
  connections_tasks_->add(ref.network.onDisconnect()
                              .exclusiveJoin(kj::mv(close.promise))
                              .exclusiveJoin(closeWhenDue(ref))
                              .attach(kj::mv(conn)));
}

RpcListener::ConnectionCounts RpcListener::connectionCounts() const {
  ConnectionCounts counts;
  for (const Connection* conn : open_) {
    ++(conn->status->logged_in ? counts.authenticated : counts.unauthenticated);
  }
  return counts;
}

bool RpcListener::evictOneNotLoggedIn() {
  auto oldest =
      std::find_if(open_.begin(), open_.end(), [](Connection* c) { return !c->status->logged_in; });
  if (oldest == open_.end()) return false;
  Connection& conn = **oldest;
  spdlog::info("event=connection_closed peer={} reason=evicted connections={}", conn.peer,
               open_.size());
  conn.close->fulfill();
  forget(conn);
  return true;
}

kj::Promise<void> RpcListener::closeWhenDue(Connection& conn) {
  const kj::TimePoint now = timer_.now();
  const ConnectionStatus& status = *conn.status;
  kj::Maybe<kj::TimePoint> next;
  if (!status.logged_in) {
    const kj::TimePoint deadline = conn.accepted_at + limits_.login_timeout;
    if (now >= deadline) {
      spdlog::info("event=connection_closed peer={} reason=login_deadline", conn.peer);
      return kj::READY_NOW;
    }
    next = deadline;
  }
  if (limits_.idle_timeout > 0 * kj::MILLISECONDS) {
    // A connection waiting for its calls is not idle: look again a whole
    // period later (every Return moves last_message).
    const kj::TimePoint idle_at = status.calls_unanswered > 0
                                      ? now + limits_.idle_timeout
                                      : status.last_message + limits_.idle_timeout;
    if (now >= idle_at) {
      spdlog::info("event=connection_closed peer={} reason=idle", conn.peer);
      return kj::READY_NOW;
    }
    KJ_IF_MAYBE (n, next) {
      next = std::min(*n, idle_at);
    } else {
      next = idle_at;
    }
  }
  KJ_IF_MAYBE (at, next) {
    return timer_.atTime(*at).then([this, &conn] { return closeWhenDue(conn); });
  }
  return kj::NEVER_DONE;
}

void RpcListener::forget(Connection& conn) {
  KJ_IF_MAYBE (position, conn.position) {
    open_.erase(*position);
    auto from_peer = open_per_peer_.find(conn.key);
    if (--from_peer->second == 0) open_per_peer_.erase(from_peer);
    conn.position = nullptr;
    spdlog::debug("event=disconnect peer={} connections={}", conn.peer, open_.size());
  }
}

void RpcListener::stopAccepting() {
  accepting_ = kj::heap<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this));
}

void RpcListener::closeConnections() {
  connections_tasks_ = kj::heap<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this));
}

void RpcListener::taskFailed(kj::Exception&& exception) {
  // A connection that broke (a client sent an oversized message, vanished,
  // ...) ends here; the server serves on.
  spdlog::info("event=connection_error error=\"{}\"", exception.getDescription().cStr());
}

}  // namespace sandpool::server
