// The serving loop's cue to busy-poll: work starting or ending on the KJ
// thread is counted, so that a turn of the loop can tell whether it did
// anything, and wakes a loop that sleeps until the next such event
// (server.cpp, serveUntilSignal).
//
// Thread: the KJ thread only.
#pragma once

#include <cstdint>

#include <kj/async.h>

namespace sandpool::server {

class ActivityCue {
 public:
  // Work began or ended.
  void signal() {
    ++count_;
    KJ_IF_MAYBE (f, next_) {
      (*f)->fulfill();
      next_ = nullptr;
    }
  }
  // How many times signal() was called since start.
  uint64_t count() const { return count_; }
  // Resolves at the next signal().
  kj::Promise<void> next() {
    auto paf = kj::newPromiseAndFulfiller<void>();
    next_ = kj::mv(paf.fulfiller);
    return kj::mv(paf.promise);
  }

 private:
  uint64_t count_ = 0;
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> next_;
};

}  // namespace sandpool::server
