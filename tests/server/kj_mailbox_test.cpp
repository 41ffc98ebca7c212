// server/kj_mailbox: messages from other threads reach the KJ thread, in
// the order each thread posted them, and runBlocking's results come back
// as promises. Real threads, a real eventfd and a real KJ event port.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include <boost/asio/thread_pool.hpp>
#include <kj/async-unix.h>

#include "server/kj_mailbox.h"

namespace sandpool::server {
namespace {

// Records its number on delivery, and that it was deleted.
class Numbered final : public KjMailbox::Message {
 public:
  Numbered(std::vector<int>& delivered, std::atomic<int>& deleted, int number)
      : delivered_(delivered), deleted_(deleted), number_(number) {}
  ~Numbered() override { deleted_.fetch_add(1); }
  void deliver() override { delivered_.push_back(number_); }

 private:
  std::vector<int>& delivered_;
  std::atomic<int>& deleted_;
  const int number_;
};

// Fulfils a promise on delivery: the test's cue that everything posted
// before it arrived.
class Last final : public KjMailbox::Message {
 public:
  explicit Last(kj::Own<kj::PromiseFulfiller<void>> fulfiller) : fulfiller_(kj::mv(fulfiller)) {}
  ~Last() noexcept override {}
  void deliver() override { fulfiller_->fulfill(); }

 private:
  kj::Own<kj::PromiseFulfiller<void>> fulfiller_;
};

class KjMailboxTest : public ::testing::Test {
 protected:
  ~KjMailboxTest() noexcept override {}

  kj::UnixEventPort port_;
  kj::EventLoop loop_{port_};
  kj::WaitScope wait_scope_{loop_};
  std::vector<int> delivered_;
  std::atomic<int> deleted_{0};
};

TEST_F(KjMailboxTest, MessagesFromAnotherThreadAreDeliveredInOrderAndDeleted) {
  KjMailbox mailbox(port_);
  kj::Promise<void> delivering = mailbox.run();
  constexpr int kMessages = 1000;
  auto done = kj::newPromiseAndFulfiller<void>();
  std::thread sender([&mailbox, this, last = new Last(kj::mv(done.fulfiller))] {
    for (int i = 0; i < kMessages; ++i) mailbox.post(new Numbered(delivered_, deleted_, i));
    mailbox.post(last);
  });
  // The loop sleeps in epoll until the eventfd wakes it.
  done.promise.wait(wait_scope_);
  sender.join();
  ASSERT_EQ(delivered_.size(), static_cast<size_t>(kMessages));
  for (int i = 0; i < kMessages; ++i) ASSERT_EQ(delivered_[static_cast<size_t>(i)], i);
  EXPECT_EQ(deleted_.load(), kMessages);
}

TEST_F(KjMailboxTest, DrainIfAnyDeliversWhileSpinningAndSaysWhetherItDid) {
  KjMailbox mailbox(port_);
  mailbox.beginSpin();
  EXPECT_FALSE(mailbox.drainIfAny());
  mailbox.post(new Numbered(delivered_, deleted_, 1));
  mailbox.post(new Numbered(delivered_, deleted_, 2));
  EXPECT_TRUE(mailbox.drainIfAny());
  EXPECT_EQ(delivered_, (std::vector<int>{1, 2}));
  mailbox.endSpin();
}

TEST_F(KjMailboxTest, MessagePostedDuringSpinIsDeliveredByEndSpin) {
  KjMailbox mailbox(port_);
  mailbox.beginSpin();
  mailbox.post(new Numbered(delivered_, deleted_, 7));
  mailbox.endSpin();
  EXPECT_EQ(delivered_, std::vector<int>{7});
}

TEST_F(KjMailboxTest, UndeliveredMessagesAreDeletedWithTheMailbox) {
  {
    KjMailbox mailbox(port_);
    mailbox.post(new Numbered(delivered_, deleted_, 1));
  }
  EXPECT_TRUE(delivered_.empty());
  EXPECT_EQ(deleted_.load(), 1);
}

TEST_F(KjMailboxTest, RunBlockingFulfilsThePromiseWithTheResultOnTheKjThread) {
  KjMailbox mailbox(port_);
  kj::Promise<void> delivering = mailbox.run();
  boost::asio::thread_pool pool(1);
  const std::thread::id kj_thread = std::this_thread::get_id();
  std::thread::id ran_on;
  auto result = runBlocking<int>(mailbox, pool, [&ran_on] {
    ran_on = std::this_thread::get_id();
    return 42;
  });
  std::thread::id continued_on;
  int value = result
                  .then([&continued_on](int v) {
                    continued_on = std::this_thread::get_id();
                    return v;
                  })
                  .wait(wait_scope_);
  EXPECT_EQ(value, 42);
  EXPECT_NE(ran_on, kj_thread);
  EXPECT_EQ(continued_on, kj_thread);
  pool.join();
}

TEST_F(KjMailboxTest, RunBlockingWhosePromiseWasDroppedDiscardsTheResult) {
  KjMailbox mailbox(port_);
  boost::asio::thread_pool pool(1);
  std::atomic<bool> ran{false};
  {
    auto dropped = runBlocking<int>(mailbox, pool, [&ran] {
      ran = true;
      return 1;
    });
  }
  pool.join();
  EXPECT_TRUE(ran.load());
  mailbox.drainNow();  // delivers to a fulfiller nobody waits on
}

}  // namespace
}  // namespace sandpool::server
