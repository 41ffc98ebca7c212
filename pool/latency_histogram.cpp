#include "pool/latency_histogram.h"

#include <algorithm>

namespace sandpool::pool {

void LatencyHistogram::add(std::chrono::nanoseconds latency) noexcept {
  const uint64_t ns = static_cast<uint64_t>(std::max<int64_t>(latency.count(), 0));
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
  const uint64_t us = ns / 1000;
  auto it = std::upper_bound(kBoundsUs.begin(), kBoundsUs.end() - 1, us);
  counts_[static_cast<size_t>(it - kBoundsUs.begin())].fetch_add(1, std::memory_order_relaxed);
}

LatencyHistogram::Snapshot LatencyHistogram::snapshot() const noexcept {
  Snapshot s;
  for (size_t i = 0; i < counts_.size(); ++i)
    s.counts[i] = counts_[i].load(std::memory_order_relaxed);
  s.sum_ns = sum_ns_.load(std::memory_order_relaxed);
  return s;
}

uint64_t LatencyHistogram::Snapshot::total() const {
  uint64_t sum = 0;
  for (uint64_t c : counts) sum += c;
  return sum;
}

uint64_t LatencyHistogram::Snapshot::quantileUs(double q) const {
  uint64_t n = total();
  if (n == 0) return 0;
  uint64_t rank =
      std::max<uint64_t>(1, static_cast<uint64_t>(q * static_cast<double>(n) + 0.999999));
  uint64_t seen = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    seen += counts[i];
    if (seen >= rank) return kBoundsUs[i];
  }
  return kBoundsUs.back();
}

}  // namespace sandpool::pool
