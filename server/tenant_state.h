// The server's view of one tenant: its configuration, its pool and its
// guests by name.
//
// Threads: `guests` and `uploading` belong to the KJ thread (uploads and
// removals arrive as RPC calls and finish there); the pool is shared with
// the workers and the tenant's strand through its own lock-free interface.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "pool/guest_pool.h"
#include "pool/tenant_pool.h"
#include "server/tenants_file.h"

namespace sandpool::server {

struct GuestEntry {
  std::shared_ptr<pool::GuestPool> pool;
  std::string sha256;
  uint64_t size = 0;
};

struct TenantState {
  TenantConfig config;
  std::unique_ptr<pool::TenantPool> pool;
  std::map<std::string, GuestEntry> guests;
  std::set<std::string> uploading;  // names with an upload in progress
  // Capabilities handed out carry the generation they were issued under;
  // bumping it (token rotated, tenant removed) revokes them all at once.
  uint64_t generation = 0;
  bool enabled = true;  // false once the tenant left the tenants file
};

}  // namespace sandpool::server
