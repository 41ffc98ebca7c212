// The bootstrap capability, `Sandpool`: what any peer may do before
// logging in (ping, version, login). One per connection, so that the log
// can name the peer and a successful login can lift the connection's
// login limits (ConnectionStatus).
//
// Thread: the KJ thread.
#pragma once

#include <string>

#include "rpc-schema/sandpool.capnp.h"
#include "server/connection_status.h"
#include "server/rpc_host_functions.h"
#include "server/tenant_registry.h"

namespace sandpool::server {

class SandpoolImpl final : public rpc::Sandpool::Server {
 public:
  SandpoolImpl(TenantRegistry& registry, HostCallForwarder& host_calls, std::string peer,
               kj::Own<ConnectionStatus> connection);

 protected:
  kj::Promise<void> ping(PingContext context) override;
  kj::Promise<void> version(VersionContext context) override;
  kj::Promise<void> login(LoginContext context) override;

 private:
  TenantRegistry& registry_;
  HostCallForwarder& host_calls_;
  std::string peer_;
  kj::Own<ConnectionStatus> connection_;
};

}  // namespace sandpool::server
