#include "vm/emulated/write_tracker.h"

#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>

#include <fmt/format.h>

namespace sandpool::vm {

namespace {

thread_local WriteTracker* t_active = nullptr;
struct sigaction g_previous;

// Every live tracker's range. The range lives in the slot itself so that a
// handler scanning on one thread never reads a tracker another thread is
// destroying; only the owner of a range ever faults inside it.
struct RegistrySlot {
  std::atomic<uintptr_t> begin{0};
  std::atomic<uintptr_t> end{0};
  std::atomic<WriteTracker*> tracker{nullptr};
};
RegistrySlot g_registry[WriteTracker::kRegistrySlots];
std::atomic<size_t> g_registry_high_water{0};

void onSegv(int sig, siginfo_t* info, void* context);

// A failed mprotect, by errno: ENOMEM is the process's mappings at
// vm.max_map_count (the VM is refused or dropped, kHostLimit), anything
// else a host failure.
Error protectError(const std::string& step) {
  if (errno == ENOMEM) {
    return makeError(ErrorKind::kHostLimit,
                     fmt::format("{}: the process's memory mappings reached vm.max_map_count", step));
  }
  return makeError(ErrorKind::kInternal, fmt::format("{}: {}", step, std::strerror(errno)));
}

}  // namespace

Expected<std::unique_ptr<WriteTracker>> WriteTracker::create(uint8_t* base,
                                                             const MemoryLayout& layout) {
  std::unique_ptr<WriteTracker> tracker(new WriteTracker(base, layout));
  if (!tracker->registerRange()) {
    return makeError(
        ErrorKind::kLimitExceeded,
        fmt::format("write tracker: more than {} emulated VMs alive at once", kRegistrySlots));
  }
  return tracker;
}

WriteTracker::WriteTracker(uint8_t* base, const MemoryLayout& layout)
    : base_(base), layout_(layout), dirty_(layout.pageCount()), registry_slot_(kRegistrySlots) {
  installHandler();
}

bool WriteTracker::registerRange() {
  for (size_t i = 0; i < kRegistrySlots; i++) {
    WriteTracker* expected = nullptr;
    RegistrySlot& slot = g_registry[i];
    if (slot.tracker.load() == nullptr && slot.begin.load() == 0 &&
        slot.tracker.compare_exchange_strong(expected, this)) {
      slot.end = reinterpret_cast<uintptr_t>(base_ + layout_.memory_size);
      slot.begin = reinterpret_cast<uintptr_t>(base_);
      registry_slot_ = i;
      size_t high = g_registry_high_water.load();
      while (high < i + 1 && !g_registry_high_water.compare_exchange_weak(high, i + 1)) {
      }
      return true;
    }
  }
  return false;
}

WriteTracker::~WriteTracker() {
  if (registry_slot_ == kRegistrySlots) return;
  RegistrySlot& slot = g_registry[registry_slot_];
  slot.begin = 0;
  slot.end = 0;
  slot.tracker = nullptr;
}

void WriteTracker::installHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_sigaction = onSegv;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &g_previous);
  });
}

Expected<void> WriteTracker::protectAll() {
  for (const Region& region : layout_.regions) {
    if (!(region.access & kAccessWrite)) continue;
    if (::mprotect(base_ + region.start, region.size, PROT_READ) != 0) {
      return protectError(fmt::format("write-protecting guest region '{}'", region.name));
    }
  }
  return {};
}

Expected<void> WriteTracker::protect(std::span<const uint32_t> pages) {
  size_t i = 0;
  while (i < pages.size()) {
    size_t run = 1;
    while (i + run < pages.size() && pages[i + run] == pages[i] + run) run++;
    if (::mprotect(base_ + uint64_t{pages[i]} * kPageSize, run * kPageSize, PROT_READ) != 0) {
      return protectError(fmt::format("write-protecting guest page {}", pages[i]));
    }
    i += run;
  }
  return {};
}

bool WriteTracker::handleFaultForSignal(uint8_t* address) noexcept {
  if (WriteTracker* active = t_active;
      active && address >= active->base_ && address < active->base_ + active->layout_.memory_size) {
    return active->recordWrite(address);
  }
  const auto a = reinterpret_cast<uintptr_t>(address);
  const size_t used = g_registry_high_water.load();
  for (size_t i = 0; i < used; i++) {
    RegistrySlot& slot = g_registry[i];
    if (a >= slot.begin.load() && a < slot.end.load()) {
      WriteTracker* tracker = slot.tracker.load();
      return tracker && tracker->recordWrite(address);
    }
  }
  return false;
}

bool WriteTracker::recordWrite(uint8_t* address) noexcept {
  const uint64_t offset = static_cast<uint64_t>(address - base_);
  const Region* region = layout_.regionAt(offset);
  if (!region || !(region->access & kAccessWrite)) return false;
  const uint64_t page = offset / kPageSize;
  dirty_.add(page);
  if (::mprotect(base_ + page * kPageSize, kPageSize, PROT_READ | PROT_WRITE) == 0) return true;
  tracking_lost_.store(true, std::memory_order_relaxed);
  return ::mprotect(base_, layout_.memory_size, PROT_READ | PROT_WRITE) == 0;
}

WriteTracker::Activation::Activation(WriteTracker& tracker) : previous_(t_active) {
  t_active = &tracker;
}

WriteTracker::Activation::~Activation() { t_active = previous_; }

namespace {

void onSegv(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  const bool handled = WriteTracker::handleFaultForSignal(static_cast<uint8_t*>(info->si_addr));
  errno = saved_errno;
  if (handled) return;
  // Not ours: behave as if we were never installed.
  if (g_previous.sa_flags & SA_SIGINFO) {
    g_previous.sa_sigaction(sig, info, context);
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
  } else {
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
  }
}

}  // namespace

}  // namespace sandpool::vm
