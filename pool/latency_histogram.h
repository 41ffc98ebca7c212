// A fixed-bucket latency histogram that any thread may add to without a
// lock: one atomic counter per bucket. Bounds grow roughly 2x per bucket from
// 10 µs to 30 s, which is fine-grained enough for p50/p99 of warm calls and
// wide enough for timeouts.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace sandpool::pool {

class LatencyHistogram {
 public:
  static constexpr std::array<uint64_t, 22> kBoundsUs = {
      10,      20,      50,       100,      200,      500,       1000,   2000,
      5000,    10000,   20000,    50000,    100000,   200000,    500000, 1000000,
      2000000, 5000000, 10000000, 20000000, 30000000, UINT64_MAX};

  struct Snapshot {
    std::array<uint64_t, kBoundsUs.size()> counts{};
    uint64_t sum_ns = 0;  // of every latency added (the Prometheus histogram's _sum)
    uint64_t total() const;
    // The upper bound of the bucket holding quantile `q` (0 < q <= 1); 0 if empty.
    uint64_t quantileUs(double q) const;
  };

  void add(std::chrono::nanoseconds latency) noexcept;
  Snapshot snapshot() const noexcept;

 private:
  std::array<std::atomic<uint64_t>, kBoundsUs.size()> counts_{};
  std::atomic<uint64_t> sum_ns_{0};
};

}  // namespace sandpool::pool
