// server/in_flight_work: what shutdown waits for, counted by WorkGuards,
// and the activity cue the serving loop busy-polls on.
#include <gtest/gtest.h>

#include <kj/async.h>

#include "server/activity_cue.h"
#include "server/in_flight_work.h"

namespace sandpool::server {
namespace {

class InFlightWorkTest : public ::testing::Test {
 protected:
  ~InFlightWorkTest() noexcept override {}

  kj::EventLoop loop_;
  kj::WaitScope wait_scope_{loop_};
  ActivityCue cue_;
  InFlightWork work_{cue_};
};

TEST_F(InFlightWorkTest, GuardCountsItsWorkUntilDestroyed) {
  {
    WorkGuard first = work_.begin();
    WorkGuard second = work_.begin();
    EXPECT_EQ(work_.count(), 2u);
  }
  EXPECT_EQ(work_.count(), 0u);
}

TEST_F(InFlightWorkTest, MovedGuardCountsOnce) {
  WorkGuard first = work_.begin();
  {
    WorkGuard moved = kj::mv(first);
    EXPECT_EQ(work_.count(), 1u);
  }
  EXPECT_EQ(work_.count(), 0u);
}

// The bug the guard fixes: work whose continuation ended it by hand never
// ended when the client cancelled the call, so shutdown waited out its
// whole grace period.
TEST_F(InFlightWorkTest, WorkOfACancelledPromiseEndsWithIt) {
  auto never = kj::newPromiseAndFulfiller<void>();
  kj::Promise<void> call = kj::mv(never.promise).attach(work_.begin());
  kj::Promise<void> drained = work_.shutdown();
  EXPECT_FALSE(drained.poll(wait_scope_));

  call = nullptr;  // the client went away

  EXPECT_EQ(work_.count(), 0u);
  EXPECT_TRUE(drained.poll(wait_scope_));
}

TEST_F(InFlightWorkTest, ShutdownResolvesWhenTheLastWorkEnds) {
  kj::Maybe<WorkGuard> first = work_.begin();
  kj::Maybe<WorkGuard> second = work_.begin();
  kj::Promise<void> drained = work_.shutdown();
  EXPECT_TRUE(work_.shuttingDown());
  first = nullptr;
  EXPECT_FALSE(drained.poll(wait_scope_));
  second = nullptr;
  EXPECT_TRUE(drained.poll(wait_scope_));
}

TEST_F(InFlightWorkTest, ShutdownWithNothingInFlightResolvesAtOnce) {
  kj::Promise<void> drained = work_.shutdown();
  EXPECT_TRUE(drained.poll(wait_scope_));
}

TEST_F(InFlightWorkTest, BeginAndEndEachSignalTheCue) {
  kj::Promise<void> next = cue_.next();
  const uint64_t before = cue_.count();
  {
    WorkGuard guard = work_.begin();
    EXPECT_EQ(cue_.count(), before + 1);
    EXPECT_TRUE(next.poll(wait_scope_));
  }
  EXPECT_EQ(cue_.count(), before + 2);
}

}  // namespace
}  // namespace sandpool::server
