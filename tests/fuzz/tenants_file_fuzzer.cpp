// parseTenantsFile on arbitrary text, as sandpoold reads its tenants file at
// start and on SIGHUP. Every input is refused with an error naming a line,
// or accepted as tenants the server can serve: at least one, valid unique
// names, unique tokens of at least 16 characters, every quota positive and
// the memory quota a whole number of MiB.
#include <cstdint>
#include <set>
#include <string>

#include "server/tenants_file.h"
#include "tests/fuzz/fuzz_check.h"

using namespace sandpool::server;
using sandpool::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr uint32_t kDefaultQueueLength = 256;
  auto tenants =
      parseTenantsFile(std::string(reinterpret_cast<const char*>(data), size), kDefaultQueueLength);
  if (!tenants) {
    require(!tenants.error().message.empty(), "a refused file says why");
    return 0;
  }
  require(!tenants->empty(), "an accepted file defines a tenant");
  std::set<std::string> names, tokens;
  for (const TenantConfig& t : *tenants) {
    require(isValidName(t.name), "tenant names are valid");
    require(names.insert(t.name).second, "tenant names are unique");
    require(t.token.size() >= 16, "tokens have at least 16 characters");
    require(tokens.insert(t.token).second, "tokens are unique");
    const auto& q = t.quota;
    require(q.max_vms > 0 && q.max_guests > 0 && q.max_concurrent_calls > 0 && q.queue_length > 0,
            "count quotas are positive");
    require(q.max_memory_bytes > 0 && q.max_memory_bytes % (1u << 20) == 0,
            "the memory quota is a positive whole number of MiB");
  }
  return 0;
}
