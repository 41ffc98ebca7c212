// The tenants file: who may log in, with which token, and what each tenant
// may use. Format (docs/server.md):
//
//   [acme]                     a section per tenant, named [A-Za-z0-9._-]
//   token = s3cret-token       required, unique, at least 16 characters
//   max_vms = 16               optional quota keys; defaults below
//   max_guests = 16
//   max_memory_mib = 1024
//   max_concurrent_calls = 64
//   queue_length = 256         default: sandpoold's --queue-length
//
// Blank lines and lines starting with '#' are ignored.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pool/tenant_pool.h"
#include "vm/error.h"

namespace sandpool::server {

struct TenantConfig {
  std::string name;
  std::string token;
  pool::Quota quota;
};

// The largest max_memory_mib: the quota in bytes fits 64 bits.
inline constexpr uint64_t kMaxMemoryMib = UINT64_MAX >> 20;

// Errors name the file's line and the offending key or value.
vm::Expected<std::vector<TenantConfig>> parseTenantsFile(const std::string& text,
                                                         uint32_t default_queue_length);
vm::Expected<std::vector<TenantConfig>> loadTenantsFile(const std::string& path,
                                                        uint32_t default_queue_length);

// Tenant and guest names: 1-64 characters of [A-Za-z0-9._-], not starting
// with '.', so that a name is always a plain file name.
bool isValidName(std::string_view name);

}  // namespace sandpool::server
