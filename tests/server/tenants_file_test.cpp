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
                "tenants file line 3: 'max_memory_mib' must be between 1 and 17592186044415, got "
                "17592186044416");
}

TEST(TenantsFileTest, MemoryQuotaAtItsLimitIsKeptInBytes) {
  auto tenants =
      parseTenantsFile(tenantWith("max_memory_mib = " + std::to_string(kMaxMemoryMib)), 256);
  ASSERT_TRUE(tenants.ok()) << tenants.error().message;
  EXPECT_EQ((*tenants)[0].quota.max_memory_bytes, kMaxMemoryMib << 20);
  EXPECT_EQ((*tenants)[0].quota.max_memory_bytes >> 20, kMaxMemoryMib);
}

TEST(TenantsFileTest, CountQuotaPastThirtyTwoBitsIsRefused) {
  expectRefused(tenantWith("max_vms = 4294967296"),
                "tenants file line 3: 'max_vms' must be between 1 and 4294967295, got 4294967296");
}

TEST(TenantsFileTest, ZeroQuotaIsRefused) {
  expectRefused(
      tenantWith("max_memory_mib = 0"),
      "tenants file line 3: 'max_memory_mib' must be between 1 and 17592186044415, got 0");
}

TEST(TenantsFileTest, TenantsWithDefaultsAndOverrides) {
  auto tenants = parseTenantsFile(
      "# comment\n\n[acme]\ntoken = acme-token-of-24-chars-x\n  max_vms = 4  \n"
      "[beta]\r\ntoken = beta-token-of-24-chars-xx\r\nqueue_length = 9\r\nmax_memory_mib = 2\r\n",
      77);
  ASSERT_TRUE(tenants.ok()) << tenants.error().message;
  ASSERT_EQ(tenants->size(), 2u);
  const TenantConfig& acme = (*tenants)[0];
  EXPECT_EQ(acme.name, "acme");
  EXPECT_EQ(acme.token, "acme-token-of-24-chars-x");
  EXPECT_EQ(acme.quota.max_vms, 4u);
  EXPECT_EQ(acme.quota.max_guests, pool::Quota{}.max_guests);
  EXPECT_EQ(acme.quota.queue_length, 77u) << "the --queue-length default";
  const TenantConfig& beta = (*tenants)[1];
  EXPECT_EQ(beta.token, "beta-token-of-24-chars-xx");
  EXPECT_EQ(beta.quota.queue_length, 9u);
  EXPECT_EQ(beta.quota.max_memory_bytes, 2ull << 20);
}

TEST(TenantsFileTest, ShortTokenIsRefusedAtItsSection) {
  expectRefused("\n[acme]\ntoken = too-short\n",
                "tenants file line 2: tenant 'acme' needs a token of at least 16 characters");
}

TEST(TenantsFileTest, TenantWithoutTokenIsRefused) {
  expectRefused("[acme]\nmax_vms = 2\n",
                "tenants file line 1: tenant 'acme' needs a token of at least 16 characters");
}

TEST(TenantsFileTest, SharedTokenIsRefused) {
  expectRefused(
      "[acme]\ntoken = same-token-of-24-chars-x\n[beta]\ntoken = same-token-of-24-chars-x\n",
      "tenants file line 3: tenant 'beta' reuses another tenant's token");
}

TEST(TenantsFileTest, TenantDefinedTwiceIsRefused) {
  expectRefused(
      "[acme]\ntoken = acme-token-of-24-chars-x\n[acme]\ntoken = acme-token-of-24-chars-y\n",
      "tenants file line 3: tenant 'acme' is defined twice");
}

TEST(TenantsFileTest, MalformedLinesAreRefusedWithTheirLine) {
  expectRefused("[acme\n", "tenants file line 1: section header '[acme' lacks ']'");
  expectRefused(
      "[../etc]\n",
      "tenants file line 1: tenant name '../etc' is not 1-64 characters of [A-Za-z0-9._-] starting "
      "with no '.'");
  expectRefused("token = acme-token-of-24-chars-x\n",
                "tenants file line 1: key outside a [tenant] section");
  expectRefused(tenantWith("max_vms"),
                "tenants file line 3: expected 'key = value', got 'max_vms'");
  expectRefused(tenantWith("max_vms = many"),
                "tenants file line 3: value of 'max_vms' is not a number: 'many'");
  expectRefused(tenantWith("colour = 3"), "tenants file line 3: unknown key 'colour'");
}

TEST(TenantsFileTest, FileWithoutTenantsIsRefused) {
  expectRefused("# nobody\n", "tenants file defines no tenant");
}

TEST(TenantsFileTest, MissingFileIsRefusedWithItsPath) {
  auto tenants = loadTenantsFile("/nonexistent/tenants.conf", 256);
  ASSERT_FALSE(tenants.ok());
  EXPECT_EQ(tenants.error().message, "cannot open tenants file '/nonexistent/tenants.conf'");
}

TEST(TenantsFileTest, NamesAreValidatedAsPlainFileNames) {
  EXPECT_TRUE(isValidName("hello-1.2_x"));
  EXPECT_TRUE(isValidName(std::string(64, 'a')));
  EXPECT_FALSE(isValidName(std::string(65, 'a')));
  EXPECT_FALSE(isValidName(""));
  EXPECT_FALSE(isValidName(".hidden"));
  EXPECT_FALSE(isValidName("a/b"));
  EXPECT_FALSE(isValidName("a b"));
}

}  // namespace
}  // namespace sandpool::server
