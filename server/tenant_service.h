// The `Tenant` capability: everything one tenant may do, scoped to it by
// construction (it is handed out by login and holds its tenant).
//
// Thread: the KJ thread. Slow work (validating and booting uploads, file
// writes) goes to the blocking pool, calls go to the tenant's pool.
#pragma once

#include <kj/memory.h>

#include "rpc-schema/sandpool.capnp.h"

namespace sandpool::server {

class ServiceContext;
struct TenantState;

kj::Own<rpc::Tenant::Server> makeTenantService(ServiceContext& ctx, TenantState& tenant);

}  // namespace sandpool::server
