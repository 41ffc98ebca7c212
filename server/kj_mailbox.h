// How other threads hand work back to the KJ (RPC) thread without a lock:
// a Boost.Lockfree queue of messages plus an eventfd that the KJ event loop
// watches. A sender pushes, then writes the eventfd only if the KJ thread is
// not already due to drain (one syscall per wake-up, not per message).
//
// Also provides runBlocking(): run a function on the blocking thread pool
// and get its result as a KJ promise on the KJ thread.
//
// Threads: post() from any thread; everything else on the KJ thread.
// Messages are delivered and deleted on the KJ thread.
#pragma once

#include <atomic>
#include <functional>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/lockfree/queue.hpp>
#include <kj/async-unix.h>
#include <kj/async.h>

#include "vm/unique_fd.h"

namespace sandpool::server {

class KjMailbox {
 public:
  class Message {
   public:
    virtual ~Message() = default;
    // On the KJ thread; the mailbox deletes the message afterwards.
    virtual void deliver() = 0;
  };

  explicit KjMailbox(kj::UnixEventPort& port);
  ~KjMailbox();

  // Any thread. Takes ownership of `message`.
  void post(Message* message);

  // The KJ-thread loop that delivers messages; runs until cancelled.
  kj::Promise<void> run();
  // Delivers whatever is queued now (for shutdown, after the senders stopped).
  void drainNow();

  // Busy-polling by the KJ thread while replies are due: between
  // beginSpin() and endSpin() senders skip the eventfd (the KJ thread is
  // awake and looking), and drainIfAny() delivers what arrived.
  void beginSpin() { signalled_.store(true); }
  bool drainIfAny();
  void endSpin();

 private:
  void drain();

  vm::UniqueFd event_fd_;
  kj::UnixEventPort::FdObserver observer_;
  boost::lockfree::queue<Message*> queue_;
  std::atomic<bool> signalled_{false};
};

// Runs `fn` on `pool` and fulfils the returned promise with its result on
// the KJ thread. If the promise is dropped first, the result is discarded.
template <typename T>
kj::Promise<T> runBlocking(KjMailbox& mailbox, boost::asio::thread_pool& pool,
                           std::function<T()> fn) {
  struct Result final : KjMailbox::Message {
    kj::Own<kj::PromiseFulfiller<T>> fulfiller;
    kj::Maybe<T> value;
    ~Result() noexcept override {}
    void deliver() override {
      KJ_IF_MAYBE (v, value) {
        fulfiller->fulfill(kj::mv(*v));
      }
    }
  };
  auto paf = kj::newPromiseAndFulfiller<T>();
  auto* result = new Result;
  result->fulfiller = kj::mv(paf.fulfiller);
  boost::asio::post(pool, [&mailbox, result, fn = std::move(fn)] {
    result->value = fn();
    mailbox.post(result);
  });
  return kj::mv(paf.promise);
}

}  // namespace sandpool::server
