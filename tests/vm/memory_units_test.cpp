// Unit tests of the pure memory units below the backends, without a VM:
// the layout computation (vm/layout), the dirty-page set (vm/dirty_pages)
// and the emulated backend's write tracker (vm/emulated/write_tracker),
// which sees real writes to a real mapping through its SIGSEGV handler.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <sandpool/abi.h>

#include <cstring>
#include <memory>
#include <vector>

#include "guest_files.h"
#include "vm/dirty_pages.h"
#include "vm/emulated/write_tracker.h"
#include "vm/guest_image.h"
#include "vm/layout.h"
#include "vm/mapping.h"

namespace sandpool::vm {
namespace {

using sandpool::testing::readGuest;

// --- layout ------------------------------------------------------------------

MemoryLayout layoutOf(const VmConfig& config) {
  auto image = GuestImage::parse(readGuest("hello"), config);
  EXPECT_TRUE(image.ok()) << image.error().describe();
  auto layout = computeLayout(*image, config);
  EXPECT_TRUE(layout.ok()) << layout.error().describe();
  return layout ? *layout : MemoryLayout{};
}

TEST(Layout, RegionsAreSortedDisjointPageAlignedAndInsideMemory) {
  const MemoryLayout layout = layoutOf(VmConfig{});
  ASSERT_FALSE(layout.regions.empty());
  uint64_t previous_end = 0;
  for (const Region& region : layout.regions) {
    SCOPED_TRACE(std::string(region.name));
    EXPECT_EQ(region.start % kPageSize, 0u);
    EXPECT_EQ(region.size % kPageSize, 0u);
    EXPECT_GT(region.size, 0u);
    EXPECT_GE(region.start, previous_end);
    EXPECT_LE(region.end(), layout.memory_size);
    previous_end = region.end();
  }
}

TEST(Layout, BuffersHeapGuardAndStackAreWhereTheConfigSays) {
  VmConfig config;
  config.memory_size = 8 * kMiB;
  config.stack_size = 64 * 1024;
  config.input_size = 5000;  // rounded up to whole pages
  config.output_size = 8192;
  config.host_call_size = 4096;
  const MemoryLayout layout = layoutOf(config);
  EXPECT_EQ(layout.memory_size, 8 * kMiB);
  EXPECT_EQ(layout.boot_info_addr, uint64_t{SANDPOOL_BOOT_INFO_ADDR});
  EXPECT_EQ(layout.input_size, 2 * kPageSize);
  EXPECT_EQ(layout.output_addr, layout.input_addr + layout.input_size);
  EXPECT_EQ(layout.output_size, 8192u);
  EXPECT_EQ(layout.host_call_addr, layout.output_addr + layout.output_size);
  EXPECT_EQ(layout.heap_start, layout.host_call_addr + layout.host_call_size);
  EXPECT_EQ(layout.stack_top, 8 * kMiB);
  EXPECT_EQ(layout.guard_addr, 8 * kMiB - 64 * 1024 - kPageSize);
  EXPECT_EQ(layout.heap_end, layout.guard_addr);

  EXPECT_EQ(layout.regionAt(0), nullptr);
  EXPECT_EQ(layout.describe(0), "page 0");
  EXPECT_EQ(layout.describe(SANDPOOL_HOST_AREA_START), "the host area");
  EXPECT_EQ(layout.regionAt(layout.guard_addr), nullptr);
  EXPECT_EQ(layout.describe(layout.guard_addr), "the guard page");
  EXPECT_EQ(layout.describe(layout.memory_size), "past guest memory");
  ASSERT_NE(layout.regionAt(layout.stack_top - 1), nullptr);
  EXPECT_EQ(layout.regionAt(layout.stack_top - 1)->name, "stack");
  ASSERT_NE(layout.regionAt(layout.heap_start), nullptr);
  EXPECT_EQ(layout.regionAt(layout.heap_end - 1)->name, "heap");
  const Region* boot_info = layout.regionAt(layout.boot_info_addr);
  ASSERT_NE(boot_info, nullptr);
  EXPECT_EQ(boot_info->access, kAccessRead) << "the guest may not write its boot info";
}

TEST(Layout, MemorySizesOutsideTheRulesAreRefused) {
  auto image = GuestImage::parse(readGuest("hello"), VmConfig{});
  ASSERT_TRUE(image.ok());
  for (uint64_t size : {uint64_t{2 * kMiB}, uint64_t{5 * kMiB}, uint64_t{65 * 1024 * kMiB}}) {
    VmConfig config;
    config.memory_size = size;
    auto layout = computeLayout(*image, config);
    ASSERT_FALSE(layout.ok()) << size;
    EXPECT_EQ(layout.error().kind, ErrorKind::kInvalidGuest);
  }
}

TEST(Layout, AStackThatLeavesNoHeapIsRefused) {
  VmConfig config;
  config.memory_size = 4 * kMiB;
  config.stack_size = 4 * kMiB;
  auto image = GuestImage::parse(readGuest("hello"), VmConfig{});
  ASSERT_TRUE(image.ok());
  auto layout = computeLayout(*image, config);
  ASSERT_FALSE(layout.ok());
  EXPECT_EQ(layout.error().kind, ErrorKind::kInvalidGuest);
  EXPECT_NE(layout.error().message.find("do not fit"), std::string::npos) << layout.error().message;
}

// --- dirty pages -------------------------------------------------------------

TEST(DirtyPages, AddsEachPageOnceInOrderAndIgnoresPagesPastTheEnd) {
  DirtyPages pages(100);
  EXPECT_TRUE(pages.empty());
  EXPECT_TRUE(pages.add(7));
  EXPECT_TRUE(pages.add(64));
  EXPECT_FALSE(pages.add(7)) << "already in the set";
  EXPECT_TRUE(pages.add(0));
  EXPECT_FALSE(pages.add(100)) << "past the last page";
  EXPECT_EQ(pages.size(), 3u);
  EXPECT_EQ(std::vector<uint32_t>(pages.pages().begin(), pages.pages().end()),
            (std::vector<uint32_t>{7, 64, 0}));
}

TEST(DirtyPages, ClearEmptiesTheSetSoPagesCanBeAddedAgain) {
  DirtyPages pages(130);
  for (uint64_t page : {1u, 63u, 64u, 129u}) ASSERT_TRUE(pages.add(page));
  pages.clear();
  EXPECT_TRUE(pages.empty());
  EXPECT_EQ(pages.size(), 0u);
  for (uint64_t page : {129u, 1u}) EXPECT_TRUE(pages.add(page)) << page;
  EXPECT_EQ(pages.size(), 2u);
}

// --- write tracker -----------------------------------------------------------

// A layout of four pages: a read-only page and three writable ones.
MemoryLayout trackedLayout() {
  MemoryLayout layout;
  layout.memory_size = 4 * kPageSize;
  layout.regions = {Region{0, kPageSize, kAccessRead, "read-only"},
                    Region{kPageSize, 3 * kPageSize, kAccessRead | kAccessWrite, "writable"}};
  return layout;
}

class WriteTrackerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto mapping = Mapping::map(layout_.memory_size, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, "tracked memory");
    ASSERT_TRUE(mapping.ok()) << mapping.error().describe();
    memory_ = std::move(*mapping);
    auto tracker = WriteTracker::create(memory_.data(), layout_);
    ASSERT_TRUE(tracker.ok()) << tracker.error().describe();
    tracker_ = std::move(*tracker);
  }

  void write(uint64_t offset, uint8_t value) {
    static_cast<volatile uint8_t*>(memory_.data())[offset] = value;
  }
  std::vector<uint32_t> dirty() const {
    return std::vector<uint32_t>(tracker_->dirty().pages().begin(),
                                 tracker_->dirty().pages().end());
  }

  MemoryLayout layout_ = trackedLayout();
  Mapping memory_;
  std::unique_ptr<WriteTracker> tracker_;
};

TEST_F(WriteTrackerTest, RecordsTheFirstWriteToEachProtectedPage) {
  ASSERT_TRUE(tracker_->protectAll().ok());
  EXPECT_TRUE(dirty().empty());
  write(2 * kPageSize + 10, 1);
  write(2 * kPageSize + 20, 2);  // same page: no second fault, no second entry
  write(kPageSize, 3);
  EXPECT_EQ(dirty(), (std::vector<uint32_t>{2, 1}));
  EXPECT_EQ(memory_.data()[2 * kPageSize + 20], 2) << "the write itself went through";
}

TEST_F(WriteTrackerTest, ProtectMakesRestoredPagesTrackedAgain) {
  ASSERT_TRUE(tracker_->protectAll().ok());
  write(3 * kPageSize, 1);
  write(kPageSize, 1);
  ASSERT_EQ(dirty().size(), 2u);
  const std::vector<uint32_t> restored = dirty();
  tracker_->dirty().clear();
  ASSERT_TRUE(tracker_->protect(restored).ok());
  write(3 * kPageSize + 1, 2);
  EXPECT_EQ(dirty(), (std::vector<uint32_t>{3}));
}

TEST_F(WriteTrackerTest, WritesOnThisThreadAreFoundThroughTheActiveTracker) {
  ASSERT_TRUE(tracker_->protectAll().ok());
  {
    WriteTracker::Activation active(*tracker_);
    write(kPageSize + 5, 9);
  }
  EXPECT_EQ(dirty(), (std::vector<uint32_t>{1}));
}

TEST(WriteTrackerRegistry, IsFullAtItsSlotCountWithATypedError) {
  MemoryLayout layout;
  layout.memory_size = kPageSize;  // one page each: the test holds thousands
  std::vector<std::unique_ptr<WriteTracker>> trackers;
  static uint8_t never_written[kPageSize];
  for (;;) {
    auto tracker = WriteTracker::create(never_written, layout);
    if (!tracker) {
      EXPECT_EQ(tracker.error().kind, ErrorKind::kLimitExceeded) << tracker.error().describe();
      break;
    }
    trackers.push_back(std::move(*tracker));
    ASSERT_LE(trackers.size(), WriteTracker::kRegistrySlots)
        << "the registry took more trackers than it has slots";
  }
  // Other tests' trackers may hold slots too; this one filled the rest.
  EXPECT_GT(trackers.size(), 0u);
  trackers.pop_back();
  EXPECT_TRUE(WriteTracker::create(never_written, layout).ok()) << "a freed slot is taken again";
}

}  // namespace
}  // namespace sandpool::vm
