#include "server/sandpool_service.h"

#include <string_view>

#include "server/rpc_codec.h"
#include "server/tenant_service.h"

namespace sandpool::server {

SandpoolImpl::SandpoolImpl(TenantRegistry& registry, HostCallForwarder& host_calls,
                           std::string peer, kj::Own<ConnectionStatus> connection)
    : registry_(registry),
      host_calls_(host_calls),
      peer_(std::move(peer)),
      connection_(kj::mv(connection)) {}

kj::Promise<void> SandpoolImpl::ping(PingContext) { return kj::READY_NOW; }

kj::Promise<void> SandpoolImpl::version(VersionContext context) {
  context.getResults().setProtocol(rpc::PROTOCOL_VERSION);
  context.getResults().setServer("sandpoold " SANDPOOL_VERSION);
  return kj::READY_NOW;
}

kj::Promise<void> SandpoolImpl::login(LoginContext context) {
  auto token = context.getParams().getToken();
  TenantState* tenant = registry_.login(std::string_view(token.begin(), token.size()), peer_);
  auto result = context.getResults().initResult();
  if (tenant == nullptr) {
    setError(result.initError(), rpc::ErrorCode::UNAUTHENTICATED, "unknown token");
    return kj::READY_NOW;
  }
  connection_->logged_in = true;
  result.setTenant(makeTenantService(registry_, host_calls_, *tenant));
  return kj::READY_NOW;
}

}  // namespace sandpool::server
