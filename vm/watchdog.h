// Stops runaway guests: one thread for the whole process watches the
// deadlines of running calls and interrupts the vCPUs that pass them.
//
// The call path takes no lock: a running call owns one slot and publishes
// its deadline there with atomics; the watchdog scans the slots every tick
// while any call is running and sleeps otherwise.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>

#include "vm/backend.h"

namespace sandpool::vm {

class Watchdog {
 public:
  static constexpr size_t kSlots = 1024;
  static constexpr std::chrono::microseconds kTick{500};

  static Watchdog& instance();

  // RAII registration of one running call. Thread: the vCPU's thread.
  class Guard {
   public:
    Guard(Watchdog& watchdog, Vcpu& vcpu, std::chrono::steady_clock::time_point deadline);
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    // True if the watchdog interrupted this call.
    bool fired() const;

   private:
    Watchdog& watchdog_;
    size_t slot_;
  };

  ~Watchdog();

 private:
  struct Slot {
    std::atomic<Vcpu*> vcpu{nullptr};
    std::atomic<int64_t> deadline_ns{INT64_MAX};  // MAX while the slot is free
    std::atomic<bool> fired{false};
    std::atomic<bool> firing{false};
    std::atomic<bool> in_use{false};
  };

  Watchdog();
  void loop();

  Slot slots_[kSlots];
  std::atomic<int> running_{0};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace sandpool::vm
