// Our own accept loop (instead of capnp::TwoPartyServer): every connection
// gets its own bootstrap capability (which knows the peer, for the log), a
// TwoPartyVatNetwork whose ReaderOptions bound the size and traversal of any
// message a client may send, and a flow limit on the call data it may have
// in flight.
//
// Threads: the KJ thread only.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <capnp/message.h>
#include <kj/async-io.h>

#include "server/sandpool_service.h"
#include "server/service_context.h"

namespace sandpool::server {

class RpcListener : private kj::TaskSet::ErrorHandler {
 public:
  RpcListener(ServiceContext& ctx, kj::Network& network, capnp::ReaderOptions reader_options,
              size_t flow_limit_words, uint32_t max_connections);
  ~RpcListener();

  // Binds `address` ("host:port" or "unix:/path") and starts accepting.
  // Returns the bound address as clients would dial it (the real port when
  // the requested one was 0).
  kj::Promise<std::string> listen(const std::string& address);

  // Closes the listening sockets; connections stay open.
  void stopAccepting();
  // Drops every connection.
  void closeConnections();

 private:
  struct Connection;
  kj::Promise<void> acceptLoop(kj::ConnectionReceiver& receiver);
  void taskFailed(kj::Exception&& exception) override;

  ServiceContext& ctx_;
  kj::Network& network_;
  capnp::ReaderOptions reader_options_;
  size_t flow_limit_words_;
  uint32_t max_connections_;
  kj::Own<kj::TaskSet> accepting_;
  kj::Own<kj::TaskSet> connections_tasks_;
  uint64_t connections_ = 0;
};

}  // namespace sandpool::server
