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
};

}  // namespace sandpool::server
