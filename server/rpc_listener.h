// Our own accept loop (instead of capnp::TwoPartyServer): every connection
// gets its own bootstrap capability (which knows the peer, for the log), a
// message stream that bounds what any message of the client may make the
// server allocate (GuardedMessageStream), and a flow limit on the call data
// it may have in flight.
//
// Connections are bounded too, so that no peer can lock tenants out:
// - at most `max_connections` at once; at the limit a new connection takes
//   the place of the oldest connection that has not logged in (which is
//   closed), and is itself closed if every connection has logged in;
// - at most `max_connections_per_peer` from one peer (one uid on the Unix
//   socket, one IP address on TCP); more are closed on accept;
// - a connection that has not logged in `login_timeout` after it was
//   accepted is closed;
// - a connection with no call in flight that moved no message either way
//   for `idle_timeout` is closed (never when it is zero).
// Every close is logged with its reason.
//
// Threads: the KJ thread only.
#pragma once

#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include <capnp/capability.h>
#include <capnp/message.h>
#include <kj/async-io.h>

#include "server/connection_status.h"
#include "server/guarded_message_stream.h"

namespace sandpool::server {

struct ConnectionLimits {
  uint32_t max_connections;
  uint32_t max_connections_per_peer;
  kj::Duration login_timeout;
  kj::Duration idle_timeout;  // zero: never
  size_t flow_limit_words;
  // The full limit (after login) is also the traversal limit of the
  // connection's RPC system.
  MessageLimits messages;
};

class RpcListener : private kj::TaskSet::ErrorHandler {
 public:
  // The bootstrap capability of a new connection from `peer`.
  using BootstrapFactory = std::function<capnp::Capability::Client(
      const std::string& peer, kj::Own<ConnectionStatus> connection)>;

  RpcListener(BootstrapFactory make_bootstrap, kj::Network& network, kj::Timer& timer,
              const ConnectionLimits& limits);
  ~RpcListener();

  // Binds `address` ("host:port" or "unix:/path") and starts accepting.
  // Returns the bound address as clients would dial it (the real port when
  // the requested one was 0).
  kj::Promise<std::string> listen(const std::string& address);

  // Closes the listening sockets; connections stay open.
  void stopAccepting();

  struct ConnectionCounts {
    uint32_t authenticated = 0, unauthenticated = 0;
  };
  // The open connections, by whether they logged in (the metrics page).
  ConnectionCounts connectionCounts() const;
  // Drops every connection.
  void closeConnections();

 private:
  struct Connection;
  kj::Promise<void> acceptLoop(kj::ConnectionReceiver& receiver);
  void admit(kj::AuthenticatedStream&& accepted);
  // Closes the oldest connection that has not logged in; false if there is none.
  bool evictOneNotLoggedIn();
  // Resolves when `conn` is due to be closed (login deadline or idle).
  kj::Promise<void> closeWhenDue(Connection& conn);
  // Drops `conn` from the counts; called once it is closing.
  void forget(Connection& conn);
  void taskFailed(kj::Exception&& exception) override;

  const BootstrapFactory make_bootstrap_;
  kj::Network& network_;
  kj::Timer& timer_;
  const ConnectionLimits limits_;
  // Open connections, oldest first, and how many each peer holds. Declared
  // before the task sets that own the connections, which forget() themselves
  // from these when they are destroyed.
  std::list<Connection*> open_;
  std::unordered_map<std::string, uint32_t> open_per_peer_;
  kj::Own<kj::TaskSet> accepting_;
  kj::Own<kj::TaskSet> connections_tasks_;
};

}  // namespace sandpool::server
