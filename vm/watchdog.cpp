#include "vm/watchdog.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <string>

#include <fmt/format.h>

#include "vm/backend.h"

namespace sandpool::vm {

namespace {

int64_t toNs(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// The futex calls behind a timed std::atomic::wait, which C++20 lacks.
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));

uint32_t* futexWord(std::atomic<uint32_t>& word) { return reinterpret_cast<uint32_t*>(&word); }

// Sleeps while `word` holds `seen`, until `deadline_ns` on the steady clock
// (CLOCK_MONOTONIC, the clock of an absolute FUTEX_WAIT_BITSET) or a wake.
void futexWaitUntil(std::atomic<uint32_t>& word, uint32_t seen, int64_t deadline_ns,
                    int64_t never) {
  timespec until{static_cast<time_t>(deadline_ns / 1'000'000'000),
                 static_cast<long>(deadline_ns % 1'000'000'000)};
  ::syscall(SYS_futex, futexWord(word), FUTEX_WAIT_BITSET_PRIVATE, seen,
            deadline_ns == never ? nullptr : &until, nullptr, FUTEX_BITSET_MATCH_ANY);
}

void futexWakeOne(std::atomic<uint32_t>& word) {
  ::syscall(SYS_futex, futexWord(word), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

}  // namespace

Watchdog::Watchdog() : thread_([this] { loop(); }) {}

Watchdog::~Watchdog() {
  stopping_ = true;
  wake();
  thread_.join();
}

void Watchdog::wake() {
  wakeups_.fetch_add(1);
  futexWakeOne(wakeups_);
}

Expected<Watchdog::Guard> Watchdog::watch(MicroVm& vcpu,
                                          std::chrono::steady_clock::time_point deadline,
                                          const std::atomic<bool>* cancelled) {
  // A slot is claimed with one compare-exchange; threads start at different
  // slots so they rarely contend.
  const size_t start = std::hash<std::thread::id>{}(std::this_thread::get_id()) % kSlots;
  size_t claimed = kSlots;
  for (size_t i = 0; i < kSlots; i++) {
    Slot& slot = slots_[(start + i) % kSlots];
    bool expected = false;
    if (slot.in_use.compare_exchange_strong(expected, true)) {
      claimed = (start + i) % kSlots;
      break;
    }
  }
  if (claimed == kSlots) {
    return makeError(ErrorKind::kLimitExceeded,
                     fmt::format("watchdog: more than {} calls running at once", kSlots));
  }
  Slot& slot = slots_[claimed];
  const int64_t deadline_ns = toNs(deadline);
  slot.fired = false;
  slot.deadline_ns = deadline_ns;
  slot.cancelled = cancelled;
  slot.vcpu = &vcpu;
  // Pairs with loop(): either its scan sees this slot, or this load sees a
  // look planned after the scan (or kNever) and wakes it if that is too late.
  if (deadline_ns < next_look_ns_.load()) wake();
  return Guard(*this, claimed);
}

Watchdog::Guard::Guard(Guard&& other) noexcept : watchdog_(other.watchdog_), slot_(other.slot_) {
  other.watchdog_ = nullptr;
}

Watchdog::Guard::~Guard() {
  if (watchdog_ == nullptr) return;
  Slot& slot = watchdog_->slots_[slot_];
  // After this, the watchdog never touches the vCPU or the cancel flag
  // again: it reads them from the slot only while holding `firing`.
  slot.vcpu = nullptr;
  slot.cancelled = nullptr;
  slot.deadline_ns = INT64_MAX;
  while (slot.firing.load()) {
  }
  slot.in_use = false;
}

bool Watchdog::Guard::fired() const { return watchdog_->slots_[slot_].fired; }

void Watchdog::loop() {
  while (!stopping_.load()) {
    next_look_ns_.store(kNever);
    const uint32_t seen = wakeups_.load();
    const int64_t next = scan(toNs(std::chrono::steady_clock::now()));
    next_look_ns_.store(next);
    // Returns at once if a call registered (or the destructor called) since
    // `seen` was read.
    futexWaitUntil(wakeups_, seen, next, kNever);
  }
}

int64_t Watchdog::scan(int64_t now_ns) {
  int64_t next = kNever;
  for (Slot& slot : slots_) {
    // Sequentially consistent, like the guard's stores, for the pairing
    // described in the guard's constructor (a plain load on x86).
    if (!slot.in_use.load()) continue;
    const int64_t deadline = slot.deadline_ns.load();
    // A call before its deadline and with no cancel flag is left alone
    // without taking `firing`, so its guard never waits on this scan.
    if (deadline > now_ns && slot.cancelled.load() == nullptr) {
      next = std::min(next, deadline);
      continue;
    }
    slot.firing = true;
    if (deadline > now_ns) {
      const std::atomic<bool>* cancelled = slot.cancelled.load();
      if (cancelled == nullptr || !cancelled->load()) {
        slot.firing = false;
        next = std::min(next, deadline);
        continue;
      }
    }
    if (MicroVm* vcpu = slot.vcpu.load()) {
      slot.fired = true;
      vcpu->interrupt();
      next = std::min(next, now_ns + std::chrono::nanoseconds(kRepeat).count());
    }
    slot.firing = false;
  }
  return next;
}

}  // namespace sandpool::vm
