// RPC work in flight (calls, uploads, store writes): what shutdown waits
// for. Each piece of work is counted by a WorkGuard for exactly as long as
// the guard lives, so work whose promise is cancelled (its client went
// away) stops counting with it instead of holding shutdown for the whole
// grace period.
//
// Thread: the KJ thread only.
#pragma once

#include <cstdint>

#include <kj/async.h>

#include "server/activity_cue.h"

namespace sandpool::server {

class WorkGuard;

class InFlightWork {
 public:
  explicit InFlightWork(ActivityCue& cue) : cue_(cue) {}
  InFlightWork(const InFlightWork&) = delete;
  InFlightWork& operator=(const InFlightWork&) = delete;

  // Counts one piece of work until the guard is destroyed.
  [[nodiscard]] WorkGuard begin();
  uint64_t count() const { return count_; }

  // From now on shuttingDown() is true (new work is refused by whoever asks
  // it); the promise resolves once nothing is in flight.
  kj::Promise<void> shutdown();
  bool shuttingDown() const { return shutting_down_; }

 private:
  friend class WorkGuard;
  void end();

  ActivityCue& cue_;
  uint64_t count_ = 0;
  bool shutting_down_ = false;
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> idle_;
};

// Move-only; attach it to the promise of the work it counts.
class WorkGuard {
 public:
  WorkGuard(WorkGuard&& other) noexcept : work_(other.work_) { other.work_ = nullptr; }
  WorkGuard& operator=(WorkGuard&&) = delete;
  WorkGuard(const WorkGuard&) = delete;
  WorkGuard& operator=(const WorkGuard&) = delete;
  ~WorkGuard() {
    if (work_ != nullptr) work_->end();
  }

 private:
  friend class InFlightWork;
  explicit WorkGuard(InFlightWork& work) : work_(&work) {}

  InFlightWork* work_;
};

}  // namespace sandpool::server
