// The `Tenant` capability and the `Guest` capabilities it hands out:
// adapters over the TenantRegistry. Each method decodes its request, calls
// one registry operation and encodes the answer (rpc_codec.h); what a
// tenant may do, and what is logged, is the registry's.
//
// A capability is scoped to its tenant by construction (login hands it out)
// and carries the tenant's generation: once a token is rotated or the
// tenant removed, every method fails with DISCONNECTED.
//
// Thread: the KJ thread.
#pragma once

#include <kj/memory.h>

#include "rpc-schema/sandpool.capnp.h"
#include "server/rpc_host_functions.h"
#include "server/tenant_registry.h"

namespace sandpool::server {

kj::Own<rpc::Tenant::Server> makeTenantService(TenantRegistry& registry,
                                               HostCallForwarder& host_calls, TenantState& tenant);

}  // namespace sandpool::server
