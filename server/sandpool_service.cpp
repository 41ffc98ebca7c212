#include "server/sandpool_service.h"

#include <openssl/crypto.h>

#include <spdlog/spdlog.h>

#include "server/rpc_codec.h"
#include "server/service_context.h"
#include "server/tenant_service.h"

namespace sandpool::server {

SandpoolImpl::SandpoolImpl(ServiceContext& context, std::string peer, kj::Own<ConnectionStatus> connection)
    : ctx_(context), peer_(std::move(peer)), connection_(kj::mv(connection)) {}

kj::Promise<void> SandpoolImpl::ping(PingContext) { return kj::READY_NOW; }

kj::Promise<void> SandpoolImpl::version(VersionContext context) {
  context.getResults().setProtocol(rpc::PROTOCOL_VERSION);
  context.getResults().setServer("sandpoold " SANDPOOL_VERSION);
  return kj::READY_NOW;
}

kj::Promise<void> SandpoolImpl::login(LoginContext context) {
  auto token = context.getParams().getToken();
  // Compare against every token in constant time, so that timing reveals
  // neither which tenant matched nor how much of a token was right.
  TenantState* match = nullptr;
  for (auto& tenant : ctx_.tenants) {
    const std::string& expected = tenant->config.token;
    bool same = tenant->enabled && token.size() == expected.size() &&
                CRYPTO_memcmp(token.begin(), expected.data(), expected.size()) == 0;
    if (same) match = tenant.get();
  }
  auto result = context.getResults().initResult();
  if (match == nullptr) {
    spdlog::warn("event=login_refused peer={}", peer_);
    setError(result.initError(), rpc::ErrorCode::UNAUTHENTICATED, "unknown token");
    return kj::READY_NOW;
  }
  spdlog::info("event=login tenant={} peer={}", match->config.name, peer_);
  connection_->logged_in = true;
  result.setTenant(makeTenantService(ctx_, *match));
  return kj::READY_NOW;
}

}  // namespace sandpool::server
