// Busy-waiting for work due within microseconds, for a thread that would
// otherwise sleep (a worker waiting for the next call, the RPC thread for a
// reply): a futex or epoll wake-up costs tens of microseconds on a virtual
// machine, where an idle vCPU halts and must be woken by the host.
//
// How to spin depends on the load, and the caller says which applies when
// the wait starts (Scheduler::spinMode()):
//   - eager, while a core is likely free: the pause instruction only. The
//     waiter notices the work within nanoseconds and keeps its core awake.
//     On a 2-core machine this made a warm call at concurrency 1 as fast as
//     a bare RPC round trip.
//   - polite, while calls queue: sched_yield() on every turn, so that the
//     threads that need the core (the RPC thread, clients, running calls)
//     get it. Spinning eagerly under load starved them (docs/performance.md).
//   - none, while long calls run set aside at idle priority (Scheduler):
//     a yield would hand the core to one of them, and the waiter would get
//     it back only at the next scheduler tick (4 ms measured), while a
//     thread woken from sleep preempts them at once.
// An eager waiter turns polite by itself once it notices it was preempted
// (a pause that took far longer than a pause): another thread wanted its
// core.
//
// Thread: one waiter, on its own stack.
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

namespace sandpool::pool {

enum class SpinMode { eager, polite, none };

class SpinWait {
 public:
  using Clock = std::chrono::steady_clock;
  // A pause that lasts this long was a preemption (a pause takes well
  // under a microsecond).
  static constexpr std::chrono::microseconds kPreempted{20};
  // A polite wait is cut to this: each turn is a system call and often a
  // context switch, which a loaded server pays for every idle turn; none of
  // the other budgets tried did better (docs/performance.md).
  static constexpr std::chrono::microseconds kPoliteBudget{100};

  SpinWait(std::chrono::microseconds budget, SpinMode mode) : budget_(budget) { restart(mode); }

  // Waits one turn; false once the budget is spent.
  bool turn() {
    if (mode_ == SpinMode::none) return false;
    if (mode_ == SpinMode::polite) {
      std::this_thread::yield();
      return Clock::now() < deadline_;
    }
    const Clock::time_point before = Clock::now();
    __builtin_ia32_pause();
    const Clock::time_point after = Clock::now();
    if (after - before > kPreempted) {
      mode_ = SpinMode::polite;
      deadline_ = std::min(deadline_, after + kPoliteBudget);
    }
    return after < deadline_;
  }

  // The awaited event happened: wait a whole budget again, in the mode
  // the caller now judges right.
  void restart(SpinMode mode) {
    mode_ = mode;
    if (mode_ != SpinMode::none) {
      deadline_ =
          Clock::now() + (mode_ == SpinMode::eager ? budget_ : std::min(budget_, kPoliteBudget));
    }
  }

 private:
  std::chrono::microseconds budget_;
  SpinMode mode_;
  Clock::time_point deadline_;
};

}  // namespace sandpool::pool
