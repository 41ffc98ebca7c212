// The metrics page (docs/server.md, "Metrics and health"): a snapshot of the
// server's counters, taken on the KJ thread, rendered in the Prometheus text
// exposition format 0.0.4 on any thread.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "pool/guest_pool.h"
#include "pool/latency_histogram.h"
#include "pool/tenant_pool.h"
#include "server/call_metrics.h"
#include "server/rpc_listener.h"
#include "server/tenant_registry.h"

namespace sandpool::server {

struct MetricsSnapshot {
  // The phases of a call, as the duration histogram's `phase` label.
  static constexpr std::array<const char*, 4> kPhases = {"queue", "run", "reset", "total"};

  struct Guest {
    std::string name;
    pool::GuestStats stats;
    OutcomeCounts calls{};
    uint64_t host_calls = 0;
    std::array<pool::LatencyHistogram::Snapshot, kPhases.size()> durations;
  };
  struct Tenant {
    std::string name;
    pool::TenantCounters counters;
    OutcomeCounts calls_to_no_guest{}, uploads{};
    pool::LatencyHistogram::Snapshot upload_duration;
    std::vector<Guest> guests;
  };
  std::vector<Tenant> tenants;
  RpcListener::ConnectionCounts connections;
  uint64_t logins_refused = 0;
};

// Thread: the KJ thread (the registry's and the listener's).
MetricsSnapshot takeMetricsSnapshot(const TenantRegistry& registry,
                                    RpcListener::ConnectionCounts connections);

// Any thread. `resident_bytes`: the process's resident memory.
std::string renderMetrics(const MetricsSnapshot& snapshot, uint64_t resident_bytes);

// The process's resident memory (/proc/self/statm); 0 if unreadable.
uint64_t residentMemoryBytes();

}  // namespace sandpool::server
