// server/guest_store: guests and their settings on real files in a
// temporary directory: what is saved comes back, a corrupted file is
// refused and left in place, and only stale temporaries are removed.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "server/guest_store.h"
#include "tests/server/server_process.h"

namespace sandpool::server {
namespace {

namespace fs = std::filesystem;

class GuestStoreTest : public ::testing::Test {
 protected:
  fs::path root() const { return dir_.path() / "guests"; }
  fs::path tenantDir() const { return root() / "acme"; }

  testing::TempDir dir_;
  GuestStore store_{root()};
  const std::vector<uint8_t> elf_{0x7f, 'E', 'L', 'F', 1, 2, 3, 4, 5};
};

std::vector<uint8_t> readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST_F(GuestStoreTest, SavedGuestLoadsBackWithItsDigest) {
  ASSERT_TRUE(store_.save("acme", "hello", elf_).ok());
  std::vector<std::string> errors;
  auto stored = store_.loadAll("acme", errors);
  EXPECT_TRUE(errors.empty());
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].guest, "hello");
  EXPECT_EQ(stored[0].elf, elf_);
  EXPECT_EQ(stored[0].sha256, sha256Hex(elf_));
}

TEST_F(GuestStoreTest, FileIsTheHeaderTheDigestAndTheElf) {
  ASSERT_TRUE(store_.save("acme", "hello", elf_).ok());
  std::vector<uint8_t> file = readFile(tenantDir() / "hello.guest");
  ASSERT_EQ(file.size(), 8 + 32 + elf_.size());
  EXPECT_EQ(std::string(file.begin(), file.begin() + 8), "SPGUEST1");
  EXPECT_EQ(std::vector<uint8_t>(file.begin() + 40, file.end()), elf_);
  EXPECT_FALSE(fs::exists(tenantDir() / ".hello.guest.tmp"));
}

TEST_F(GuestStoreTest, GuestsLoadSortedByName) {
  for (const char* name : {"zeta", "alpha", "mid"})
    ASSERT_TRUE(store_.save("acme", name, elf_).ok());
  std::vector<std::string> errors;
  auto stored = store_.loadAll("acme", errors);
  ASSERT_EQ(stored.size(), 3u);
  EXPECT_EQ(stored[0].guest, "alpha");
  EXPECT_EQ(stored[1].guest, "mid");
  EXPECT_EQ(stored[2].guest, "zeta");
}

TEST_F(GuestStoreTest, CorruptedFileIsRefusedWithBothDigestsAndLeftInPlace) {
  ASSERT_TRUE(store_.save("acme", "hello", elf_).ok());
  const fs::path file = tenantDir() / "hello.guest";
  std::vector<uint8_t> bytes = readFile(file);
  bytes.back() ^= 0xff;
  std::ofstream(file, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  std::vector<std::string> errors;
  auto stored = store_.loadAll("acme", errors);
  EXPECT_TRUE(stored.empty());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("guest 'hello' of tenant 'acme': stored file is corrupted (SHA-256 "),
            std::string::npos)
      << errors[0];
  EXPECT_NE(errors[0].find("!= recorded " + sha256Hex(elf_)), std::string::npos) << errors[0];
  EXPECT_TRUE(fs::exists(file));
}

TEST_F(GuestStoreTest, FileWithoutTheHeaderIsRefused) {
  fs::create_directories(tenantDir());
  std::ofstream(tenantDir() / "short.guest") << "ELF";
  std::vector<std::string> errors;
  EXPECT_TRUE(store_.loadAll("acme", errors).empty());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0],
            "guest 'short' of tenant 'acme': stored file has no sandpool guest header (3 bytes)");
}

TEST_F(GuestStoreTest, TenantWithoutADirectoryHasNoGuests) {
  std::vector<std::string> errors;
  EXPECT_TRUE(store_.loadAll("nobody", errors).empty());
  EXPECT_TRUE(errors.empty());
}

TEST_F(GuestStoreTest, SettingsLoadBackAsSaved) {
  EXPECT_FALSE(store_.loadSettings("acme", "hello").has_value());
  ASSERT_TRUE(store_.saveSettings("acme", "hello", {.min_warm = 2, .max_vms = 5}).ok());
  auto settings = store_.loadSettings("acme", "hello");
  ASSERT_TRUE(settings.has_value());
  EXPECT_EQ(settings->min_warm, 2u);
  EXPECT_EQ(settings->max_vms, 5u);
}

TEST_F(GuestStoreTest, IncompleteSettingsFileCountsAsNone) {
  fs::create_directories(tenantDir());
  std::ofstream(tenantDir() / "hello.settings") << "min_warm = 2\n";
  EXPECT_FALSE(store_.loadSettings("acme", "hello").has_value());
}

TEST_F(GuestStoreTest, VmSettingsLoadBackAsSavedAndNoneChosenWithoutAFile) {
  auto none = store_.loadVmSettings("acme", "hello");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  const VmSettings chosen{.memory_bytes = 32 << 20, .output_bytes = 8192, .max_host_calls = 7};
  ASSERT_TRUE(store_.saveVmSettings("acme", "hello", chosen).ok());
  auto loaded = store_.loadVmSettings("acme", "hello");
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(*loaded, chosen);
}

TEST_F(GuestStoreTest, MalformedVmSettingsAreAnError) {
  fs::create_directories(tenantDir());
  std::ofstream(tenantDir() / "hello.vm") << "memory_bytes = lots\n";
  auto loaded = store_.loadVmSettings("acme", "hello");
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.error().message.find("VM settings of guest 'hello' of tenant 'acme'"),
            std::string::npos)
      << loaded.error().message;
}

TEST_F(GuestStoreTest, RemoveDeletesTheGuestAndItsSettings) {
  ASSERT_TRUE(store_.save("acme", "hello", elf_).ok());
  ASSERT_TRUE(store_.saveSettings("acme", "hello", {.min_warm = 1, .max_vms = 2}).ok());
  ASSERT_TRUE(store_.saveVmSettings("acme", "hello", {.max_host_calls = 3}).ok());
  ASSERT_TRUE(store_.remove("acme", "hello").ok());
  EXPECT_FALSE(fs::exists(tenantDir() / "hello.vm"));
  EXPECT_FALSE(fs::exists(tenantDir() / "hello.guest"));
  EXPECT_FALSE(fs::exists(tenantDir() / "hello.settings"));
  EXPECT_TRUE(store_.remove("acme", "hello").ok()) << "removing what is gone is not an error";
}

TEST_F(GuestStoreTest, StaleTemporariesAreRemovedAndNewerOnesKept) {
  fs::create_directories(tenantDir());
  fs::create_directories(root() / "gone-tenant");
  const fs::path stale = tenantDir() / ".hello.guest.tmp";
  const fs::path of_gone_tenant = root() / "gone-tenant" / ".x.settings.tmp";
  const fs::path not_temporary = tenantDir() / "hello.tmp";
  std::ofstream(stale) << "12345";
  std::ofstream(of_gone_tenant) << "1";
  std::ofstream(not_temporary) << "1";
  const fs::path fresh = tenantDir() / ".other.guest.tmp";
  std::ofstream(fresh) << "1";
  // The clock a start-up would read: after the stale files, before `fresh`.
  const fs::file_time_type started = fs::last_write_time(fresh);
  const auto before = started - std::chrono::hours(1);
  fs::last_write_time(stale, before);
  fs::last_write_time(of_gone_tenant, before);
  fs::last_write_time(not_temporary, before);

  auto removed = store_.removeStaleTemporaries(started);

  ASSERT_EQ(removed.size(), 2u);
  for (const auto& r : removed) EXPECT_FALSE(r.error.has_value()) << r.path;
  std::vector<fs::path> paths{removed[0].path, removed[1].path};
  std::sort(paths.begin(), paths.end());
  std::vector<fs::path> expected{stale, of_gone_tenant};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(paths, expected);
  for (const auto& r : removed) {
    if (r.path == stale) {
      EXPECT_EQ(r.bytes, 5u);
    }
  }
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_FALSE(fs::exists(of_gone_tenant));
  EXPECT_TRUE(fs::exists(fresh)) << "written at or after the start: this process's own upload";
  EXPECT_TRUE(fs::exists(not_temporary));
}

}  // namespace
}  // namespace sandpool::server
