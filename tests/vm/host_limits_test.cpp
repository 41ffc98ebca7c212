// The process-wide limits a new VM is checked against (vm/host_limits.h):
// the real /proc counts, a real RLIMIT_NOFILE lowered in this test process.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "vm/host_limits.h"
#include "vm/mapping.h"
#include "vm/unique_fd.h"

namespace sandpool::vm {
namespace {

// Restores RLIMIT_NOFILE as it was when the test began.
class FileLimitRestorer {
 public:
  FileLimitRestorer() { getrlimit(RLIMIT_NOFILE, &saved_); }
  ~FileLimitRestorer() { setrlimit(RLIMIT_NOFILE, &saved_); }
  const rlimit& saved() const { return saved_; }

 private:
  rlimit saved_{};
};

TEST(HostLimits, UsageCountsTheProcessMappingsAndOpenFiles) {
  auto before = readHostUsage();
  ASSERT_TRUE(before) << before.error().describe();
  UniqueFd extra(::dup(0));
  ASSERT_GE(extra.get(), 0);
  // Two pages, the second made read-only: two mappings the kernel cannot merge.
  auto mapping = Mapping::map(2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                              "test mapping");
  ASSERT_TRUE(mapping);
  ASSERT_EQ(::mprotect(mapping->data() + 4096, 4096, PROT_READ), 0);
  auto after = readHostUsage();
  ASSERT_TRUE(after) << after.error().describe();
  EXPECT_EQ(after->files, before->files + 1);
  EXPECT_GE(after->mappings, before->mappings + 2);
  EXPECT_GT(after->mapping_limit, 0u);
}

TEST(HostLimits, NoRoomForAVmThatWouldPassTheOpenFileLimitNamingIt) {
  FileLimitRestorer restorer;
  {
    auto usage = readHostUsage();
    ASSERT_TRUE(usage);
    // Fewer free files than the margin keeps.
    rlimit low{usage->files + 8, restorer.saved().rlim_max};
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
    HostLimitWatch watch;
    auto refused = takeRoomForVm();
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().kind, ErrorKind::kHostLimit);
    EXPECT_NE(refused.error().message.find("RLIMIT_NOFILE"), std::string::npos)
        << refused.error().message;
  }
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &restorer.saved()), 0);
  HostLimitWatch watch;
  auto room = takeRoomForVm();
  ASSERT_TRUE(room) << room.error().describe();
}

TEST(HostLimits, NoRoomForAVmPastTheMappingLimitNamingIt) {
  auto usage = readHostUsage();
  ASSERT_TRUE(usage);
  HostLimitWatch watch(usage->mappings + 10);
  auto refused = takeRoomForVm();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().kind, ErrorKind::kHostLimit);
  EXPECT_NE(refused.error().message.find("vm.max_map_count"), std::string::npos)
      << refused.error().message;
}

TEST(HostLimits, WithoutAWatchNothingIsChecked) { EXPECT_TRUE(takeRoomForVm()); }

TEST(HostLimits, RaiseFileLimitLiftsTheSoftLimitToTheHardLimit) {
  FileLimitRestorer restorer;
  if (restorer.saved().rlim_max == RLIM_INFINITY || restorer.saved().rlim_max < 64)
    GTEST_SKIP() << "needs a finite hard RLIMIT_NOFILE of at least 64";
  rlimit low{64, restorer.saved().rlim_max};
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  auto raised = raiseFileLimit();
  ASSERT_TRUE(raised) << raised.error().describe();
  EXPECT_EQ(*raised, restorer.saved().rlim_max);
  rlimit now{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &now), 0);
  EXPECT_EQ(now.rlim_cur, restorer.saved().rlim_max);
}

}  // namespace
}  // namespace sandpool::vm
