#include "vm/watchdog.h"

#include <stdexcept>

namespace sandpool::vm {

namespace {

constexpr auto kIdleBeforeSleep = std::chrono::milliseconds(200);

int64_t toNs(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

Watchdog& Watchdog::instance() {
  static Watchdog watchdog;
  return watchdog;
}

Watchdog::Watchdog() : thread_([this] { loop(); }) {}

Watchdog::~Watchdog() {
  stopping_ = true;
  running_.fetch_add(1);
  running_.notify_one();
  thread_.join();
}

Watchdog::Guard::Guard(Watchdog& watchdog, Vcpu& vcpu, std::chrono::steady_clock::time_point deadline)
    : watchdog_(watchdog), slot_(kSlots) {
  // A slot is claimed with one compare-exchange; threads start at different
  // slots so they rarely contend.
  const size_t start = std::hash<std::thread::id>{}(std::this_thread::get_id()) % kSlots;
  for (size_t i = 0; i < kSlots; i++) {
    Slot& slot = watchdog_.slots_[(start + i) % kSlots];
    bool expected = false;
    if (slot.in_use.compare_exchange_strong(expected, true)) {
      slot_ = (start + i) % kSlots;
      break;
    }
  }
  if (slot_ == kSlots) throw std::runtime_error("watchdog: more than 1024 calls running at once");
  Slot& slot = watchdog_.slots_[slot_];
  slot.fired = false;
  slot.deadline_ns = toNs(deadline);
  slot.vcpu = &vcpu;
  if (watchdog_.running_.fetch_add(1) == 0) watchdog_.running_.notify_one();
}

Watchdog::Guard::~Guard() {
  Slot& slot = watchdog_.slots_[slot_];
  // After this, the watchdog never touches the vCPU again: it only
  // interrupts a vCPU it read from the slot while holding `firing`.
  slot.vcpu = nullptr;
  slot.deadline_ns = INT64_MAX;
  while (slot.firing.load()) {
  }
  slot.in_use = false;
  watchdog_.running_.fetch_sub(1);
}

bool Watchdog::Guard::fired() const { return watchdog_.slots_[slot_].fired; }

void Watchdog::loop() {
  auto last_busy = std::chrono::steady_clock::now();
  while (!stopping_) {
    if (running_.load() == 0) {
      if (std::chrono::steady_clock::now() - last_busy > kIdleBeforeSleep) running_.wait(0);
    } else {
      last_busy = std::chrono::steady_clock::now();
    }
    const int64_t now = toNs(std::chrono::steady_clock::now());
    for (Slot& slot : slots_) {
      if (!slot.in_use.load(std::memory_order_relaxed)) continue;
      if (slot.deadline_ns.load() > now) continue;
      slot.firing = true;
      // Re-sent every tick until the call ends: an interrupt that raced with
      // the start of run() is not lost.
      if (Vcpu* vcpu = slot.vcpu.load()) {
        slot.fired = true;
        vcpu->interrupt();
      }
      slot.firing = false;
    }
    std::this_thread::sleep_for(kTick);
  }
}

}  // namespace sandpool::vm
