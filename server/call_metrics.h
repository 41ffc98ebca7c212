// What the server counts per guest and per tenant for its metrics page
// (docs/server.md, "Metrics and health"), beside the pools' own counters.
//
// Thread: the KJ thread only: calls are recorded where their outcome is
// delivered, uploads and refusals where they are answered, and the metrics
// page reads them there too (metrics_page.h), so plain integers suffice.
// The histograms are the pool's lock-free ones, used by one thread here.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "pool/call_task.h"
#include "pool/latency_histogram.h"
#include "server/failure_code.h"

namespace sandpool::server {

// The outcome label of a call or an upload: each FailureCode (the schema's
// ErrorCode), then ok, then cancelled (the caller went away).
inline constexpr size_t kOutcomeOk = kFailureCodeCount;
inline constexpr size_t kOutcomeCancelled = kFailureCodeCount + 1;
inline constexpr size_t kOutcomeCount = kFailureCodeCount + 2;
using OutcomeCounts = std::array<uint64_t, kOutcomeCount>;

inline size_t outcomeSlot(FailureCode code) { return static_cast<size_t>(code); }

// A delivered call's slot: `cancelled` says whether its caller went away.
size_t outcomeSlot(const pool::CallOutcome& outcome, bool cancelled);

// One guest's calls, by name: kept across a replacement of the guest, gone
// with its removal.
struct GuestMetrics {
  OutcomeCounts calls{};
  uint64_t host_calls = 0;
  pool::LatencyHistogram queue, run, reset, total;

  void record(const pool::CallOutcome& outcome, bool cancelled, std::chrono::nanoseconds total);
};

// A tenant's answers that name no installed guest, and its uploads.
struct TenantMetrics {
  OutcomeCounts calls_to_no_guest{};
  OutcomeCounts uploads{};
  pool::LatencyHistogram upload_duration;
};

}  // namespace sandpool::server
