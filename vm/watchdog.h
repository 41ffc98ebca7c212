// Stops runaway guests: one thread per watchdog watches the deadlines of
// running calls and interrupts the vCPUs that pass them. Each Backend owns
// one (Backend::watchdog()), so two servers or test fixtures in one process,
// each with its own backend, never share its slots.
//
// The call path takes no lock: a running call owns one slot and publishes
// its deadline there with atomics. The watchdog sleeps until the earliest
// deadline it saw, and a call wakes it (one futex wake) only if its own
// deadline comes sooner; with one call timeout for all, the call that
// started first always ends first, so a busy server wakes the watchdog
// about once per timeout instead of once per call or per tick. Each
// wake-up of an idle thread costs a context switch, which on a virtual
// machine costs more than a short call (docs/performance.md).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>

#include "vm/error.h"

namespace sandpool::vm {

class MicroVm;

class Watchdog {
 public:
  static constexpr size_t kSlots = 1024;
  // A call past its deadline is interrupted again this often until it
  // ends, so an interrupt that raced with the start of a run is not lost.
  static constexpr std::chrono::microseconds kRepeat{500};

  // Starts the watchdog's thread.
  Watchdog();
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // RAII registration of one running call. Thread: the vCPU's thread.
  class Guard {
   public:
    Guard(Guard&& other) noexcept;
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    Guard& operator=(Guard&&) = delete;
    // True if the watchdog interrupted this call.
    bool fired() const;

   private:
    friend class Watchdog;
    Guard(Watchdog& watchdog, size_t slot) : watchdog_(&watchdog), slot_(slot) {}

    Watchdog* watchdog_;  // nullptr once moved from
    size_t slot_;
  };

  // Watches `vcpu` until the guard ends: interrupts it once `deadline`
  // passes, or once `cancelled` (if given) is set and poke() called.
  // kLimitExceeded if kSlots calls are running on this watchdog.
  Expected<Guard> watch(MicroVm& vcpu, std::chrono::steady_clock::time_point deadline,
                        const std::atomic<bool>* cancelled = nullptr);

  // Any thread: look at the running calls now (a call was cancelled).
  void poke() { wake(); }

 private:
  struct Slot {
    std::atomic<MicroVm*> vcpu{nullptr};
    // Read only while `firing` is held, like vcpu: the flag may end with
    // the call.
    std::atomic<const std::atomic<bool>*> cancelled{nullptr};
    std::atomic<int64_t> deadline_ns{INT64_MAX};  // MAX while the slot is free
    std::atomic<bool> fired{false};
    std::atomic<bool> firing{false};
    std::atomic<bool> in_use{false};
  };

  void loop();
  // Interrupts the calls past their deadline; returns when to look again
  // (kNever if no call is running).
  int64_t scan(int64_t now_ns);
  void wake();

  static constexpr int64_t kNever = INT64_MAX;

  Slot slots_[kSlots];
  // When the watchdog will look at the slots next, on its own. kNever while
  // it scans or has nothing to wait for, so that a call registering then
  // always wakes it.
  std::atomic<int64_t> next_look_ns_{kNever};
  std::atomic<uint32_t> wakeups_{0};  // the futex word the watchdog sleeps on
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace sandpool::vm
