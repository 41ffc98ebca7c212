// server/tenants_file: the parser's limits, each refused with the line and
// the range it takes.
#include <gtest/gtest.h>

#include <string>

#include "server/tenants_file.h"

namespace sandpool::server {
namespace {

std::string tenantWith(const std::string& line) {
  return "[acme]\ntoken = acme-token-of-24-chars-x\n" + line + "\n";
}

void expectRefused(const std::string& text, const std::string& message) {
  auto tenants = parseTenantsFile(text, 256);
  ASSERT_FALSE(tenants.ok()) << "accepted: " << text;
  EXPECT_EQ(tenants.error().message, message);
}

// Found by the tenants_file fuzz target: the quota in bytes wrapped around
// (2^44 MiB became 0 bytes, 2^44 + 1 MiB became 1 MiB).
TEST(TenantsFileTest, MemoryQuotaWhoseBytesDoNotFitSixtyFourBitsIsRefused) {
  expectRefused(tenantWith("max_memory_mib = 17592186044416"),
                "tenants file line 3: 'max_memory_mib' must be between 1 and 17592186044415, got 17592186044416");
}

TEST(TenantsFileTest, MemoryQuotaAtItsLimitIsKeptInBytes) {
  auto tenants = parseTenantsFile(tenantWith("max_memory_mib = " + std::to_string(kMaxMemoryMib)), 256);
  ASSERT_TRUE(tenants.ok()) << tenants.error().message;
  EXPECT_EQ((*tenants)[0].quota.max_memory_bytes, kMaxMemoryMib << 20);
  EXPECT_EQ((*tenants)[0].quota.max_memory_bytes >> 20, kMaxMemoryMib);
}

TEST(TenantsFileTest, CountQuotaPastThirtyTwoBitsIsRefused) {
  expectRefused(tenantWith("max_vms = 4294967296"),
                "tenants file line 3: 'max_vms' must be between 1 and 4294967295, got 4294967296");
}

TEST(TenantsFileTest, ZeroQuotaIsRefused) {
  expectRefused(tenantWith("max_memory_mib = 0"),
                "tenants file line 3: 'max_memory_mib' must be between 1 and 17592186044415, got 0");
}

}  // namespace
}  // namespace sandpool::server
