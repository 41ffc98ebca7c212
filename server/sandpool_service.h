// The bootstrap capability, `Sandpool`: what any peer may do before
// logging in (ping, version, login). One per connection, so that the log
// can name the peer.
//
// Thread: the KJ thread.
#pragma once

#include <string>

#include "rpc-schema/sandpool.capnp.h"

namespace sandpool::server {

class ServiceContext;

class SandpoolImpl final : public rpc::Sandpool::Server {
 public:
  SandpoolImpl(ServiceContext& context, std::string peer);

 protected:
  kj::Promise<void> ping(PingContext context) override;
  kj::Promise<void> version(VersionContext context) override;
  kj::Promise<void> login(LoginContext context) override;

 private:
  ServiceContext& ctx_;
  std::string peer_;
};

}  // namespace sandpool::server
