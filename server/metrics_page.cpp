#include "server/metrics_page.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "server/rpc_codec.h"

namespace sandpool::server {

namespace {

// Collects one tenant through the registry's stats visitor, with the
// server's own counters of each guest beside the pool's.
class SnapshotVisitor final : public StatsVisitor {
 public:
  SnapshotVisitor(const TenantState& state, MetricsSnapshot::Tenant& out)
      : state_(state), out_(out) {}

  void tenant(const TenantConfig& config, const pool::TenantCounters& counters,
              size_t guests) override {
    out_.name = config.name;
    out_.counters = counters;
    out_.calls_to_no_guest = state_.metrics.calls_to_no_guest;
    out_.uploads = state_.metrics.uploads;
    out_.upload_duration = state_.metrics.upload_duration.snapshot();
    out_.guests.reserve(guests);
  }

  void guest(const std::string& name, const pool::GuestStats& stats) override {
    const GuestMetrics& metrics = *state_.guests.at(name).metrics;
    out_.guests.push_back({.name = name,
                           .stats = stats,
                           .calls = metrics.calls,
                           .host_calls = metrics.host_calls,
                           .durations = {metrics.queue.snapshot(), metrics.run.snapshot(),
                                         metrics.reset.snapshot(), metrics.total.snapshot()}});
  }

 private:
  const TenantState& state_;
  MetricsSnapshot::Tenant& out_;
};

using Label = std::pair<std::string_view, std::string_view>;

// Writes the text exposition format: a family's HELP and TYPE lines, then
// its samples, each family's samples together.
class PageWriter {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(out(), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }

  void sample(std::string_view name, std::initializer_list<Label> labels, uint64_t value,
              std::optional<Label> extra = std::nullopt) {
    writeName(name, labels, extra);
    fmt::format_to(out(), " {}\n", value);
  }

  void sampleSeconds(std::string_view name, std::initializer_list<Label> labels,
                     uint64_t nanoseconds) {
    writeName(name, labels, std::nullopt);
    fmt::format_to(out(), " {}\n", static_cast<double>(nanoseconds) / 1e9);
  }

  // A histogram's _bucket (cumulative, `le` in seconds), _sum and _count.
  void histogram(std::string_view name, std::initializer_list<Label> labels,
                 const pool::LatencyHistogram::Snapshot& h) {
    const auto& bounds = pool::LatencyHistogram::kBoundsUs;
    const std::string bucket = std::string(name) + "_bucket";
    uint64_t cumulative = 0;
    for (size_t i = 0; i < bounds.size(); ++i) {
      cumulative += h.counts[i];
      const std::string le = i + 1 == bounds.size()
                                 ? std::string("+Inf")
                                 : fmt::format("{}", static_cast<double>(bounds[i]) / 1e6);
      sample(bucket, labels, cumulative, Label{"le", le});
    }
    sampleSeconds(std::string(name) + "_sum", labels, h.sum_ns);
    sample(std::string(name) + "_count", labels, cumulative);
  }

  std::string take() { return std::move(text_); }

 private:
  std::back_insert_iterator<std::string> out() { return std::back_inserter(text_); }

  void writeName(std::string_view name, std::initializer_list<Label> labels,
                 const std::optional<Label>& extra) {
    text_ += name;
    if (labels.size() == 0 && !extra) return;
    char separator = '{';
    auto write = [&](const Label& label) {
      text_ += separator;
      text_ += label.first;
      text_ += "=\"";
      escapeInto(label.second);
      text_ += '"';
      separator = ',';
    };
    for (const Label& label : labels) write(label);
    if (extra) write(*extra);
    text_ += '}';
  }

  // Label values escape backslash, double quote and line feed.
  void escapeInto(std::string_view value) {
    for (char c : value) {
      if (c == '\\') {
        text_ += "\\\\";
      } else if (c == '"') {
        text_ += "\\\"";
      } else if (c == '\n') {
        text_ += "\\n";
      } else {
        text_ += c;
      }
    }
  }

  std::string text_;
};

// pool::GuestStats, one series per field: a new field is one line here.
struct GuestSeries {
  const char* name;
  const char* type;
  const char* help;
  const char* state;  // the `state` label, where the family has one
  uint64_t (*value)(const pool::GuestStats&);
};
constexpr GuestSeries kGuestSeries[] = {
    {"sandpool_vms", "gauge", "VMs of a guest, by state.", "warm",
     [](const pool::GuestStats& s) -> uint64_t { return s.warm; }},
    {"sandpool_vms", "gauge", "VMs of a guest, by state.", "busy",
     [](const pool::GuestStats& s) -> uint64_t { return s.busy; }},
    {"sandpool_calls_waiting", "gauge", "Calls parked until a VM of the guest is free.", nullptr,
     [](const pool::GuestStats& s) -> uint64_t { return s.waiting; }},
    {"sandpool_vms_created_total", "counter", "VMs created for the guest.", nullptr,
     [](const pool::GuestStats& s) -> uint64_t { return s.created; }},
    {"sandpool_vm_resets_total", "counter", "VM resets after a call.", nullptr,
     [](const pool::GuestStats& s) -> uint64_t { return s.reset; }},
    {"sandpool_vms_dropped_total", "counter",
     "VMs dropped (idle, scaled to zero, failed reset, guest retired).", nullptr,
     [](const pool::GuestStats& s) -> uint64_t { return s.discarded; }},
    {"sandpool_pool_calls_total", "counter", "Calls the guest's pool completed or refused.",
     nullptr, [](const pool::GuestStats& s) -> uint64_t { return s.calls; }},
    {"sandpool_pool_calls_failed_total", "counter", "Calls of the pool that did not succeed.",
     nullptr, [](const pool::GuestStats& s) -> uint64_t { return s.failed; }},
    {"sandpool_call_timeouts_total", "counter", "Calls stopped at their deadline.", nullptr,
     [](const pool::GuestStats& s) -> uint64_t { return s.timeouts; }},
    {"sandpool_snapshot_bytes", "gauge",
     "Resident memory of the guest's snapshot, shared by all its VMs.", nullptr,
     [](const pool::GuestStats& s) -> uint64_t { return s.snapshot_bytes; }},
};

// The outcome label values: the schema's error code names, ok, cancelled.
const std::array<std::string, kOutcomeCount>& outcomeNames() {
  static const std::array<std::string, kOutcomeCount> names = [] {
    std::array<std::string, kOutcomeCount> n;
    for (size_t i = 0; i < kFailureCodeCount; ++i)
      n[i] = errorCodeName(static_cast<FailureCode>(i));
    n[kOutcomeOk] = "ok";
    n[kOutcomeCancelled] = "cancelled";
    return n;
  }();
  return names;
}

void writeTenantSeries(PageWriter& page, const MetricsSnapshot& s) {
  struct TenantSeries {
    const char* name;
    const char* type;
    const char* help;
    uint64_t (*value)(const pool::TenantCounters&);
  };
  static constexpr TenantSeries kTenantSeries[] = {
      {"sandpool_queue_depth", "gauge", "Calls of the tenant queued for a worker.",
       [](const pool::TenantCounters& c) -> uint64_t { return c.queued; }},
      {"sandpool_calls_running", "gauge", "Calls of the tenant running on the workers.",
       [](const pool::TenantCounters& c) -> uint64_t { return c.running; }},
      {"sandpool_long_calls_running", "gauge", "Calls of the tenant set aside as long calls.",
       [](const pool::TenantCounters& c) -> uint64_t { return c.long_calls; }},
      {"sandpool_tenant_vms", "gauge", "VMs of all the tenant's guests.",
       [](const pool::TenantCounters& c) -> uint64_t { return c.vms; }},
      {"sandpool_tenant_memory_bytes", "gauge", "Guest memory the tenant's VMs hold.",
       [](const pool::TenantCounters& c) -> uint64_t { return c.memory_bytes; }},
      {"sandpool_overloaded_total", "counter", "Calls refused because the tenant's queue was full.",
       [](const pool::TenantCounters& c) -> uint64_t { return c.overloaded; }},
  };
  for (const TenantSeries& series : kTenantSeries) {
    page.family(series.name, series.type, series.help);
    for (const auto& t : s.tenants)
      page.sample(series.name, {{"tenant", t.name}}, series.value(t.counters));
  }
  page.family("sandpool_guests", "gauge", "Guests installed for the tenant.");
  for (const auto& t : s.tenants)
    page.sample("sandpool_guests", {{"tenant", t.name}}, t.guests.size());

  const auto& outcomes = outcomeNames();
  page.family("sandpool_uploads_total", "counter", "Uploads answered, by outcome.");
  for (const auto& t : s.tenants) {
    for (size_t o = 0; o < kOutcomeCount; ++o)
      page.sample("sandpool_uploads_total", {{"tenant", t.name}, {"outcome", outcomes[o]}},
                  t.uploads[o]);
  }
  page.family("sandpool_upload_duration_seconds", "histogram",
              "Time from an upload's receipt to its answer.");
  for (const auto& t : s.tenants)
    page.histogram("sandpool_upload_duration_seconds", {{"tenant", t.name}}, t.upload_duration);
}

void writeGuestSeries(PageWriter& page, const MetricsSnapshot& s) {
  const auto& outcomes = outcomeNames();
  page.family("sandpool_calls_total", "counter",
              "Calls answered, by outcome (guest empty: the call named no installed guest).");
  for (const auto& t : s.tenants) {
    for (size_t o = 0; o < kOutcomeCount; ++o) {
      if (t.calls_to_no_guest[o] == 0) continue;
      page.sample("sandpool_calls_total",
                  {{"tenant", t.name}, {"guest", ""}, {"outcome", outcomes[o]}},
                  t.calls_to_no_guest[o]);
    }
    for (const auto& g : t.guests) {
      for (size_t o = 0; o < kOutcomeCount; ++o)
        page.sample("sandpool_calls_total",
                    {{"tenant", t.name}, {"guest", g.name}, {"outcome", outcomes[o]}}, g.calls[o]);
    }
  }
  page.family("sandpool_call_duration_seconds", "histogram",
              "Call time by phase: queue (receipt to a VM), run (in the guest), reset, total "
              "(receipt to the answer).");
  for (const auto& t : s.tenants) {
    for (const auto& g : t.guests) {
      for (size_t p = 0; p < MetricsSnapshot::kPhases.size(); ++p)
        page.histogram(
            "sandpool_call_duration_seconds",
            {{"tenant", t.name}, {"guest", g.name}, {"phase", MetricsSnapshot::kPhases[p]}},
            g.durations[p]);
    }
  }
  page.family("sandpool_host_calls_total", "counter", "Host calls served to the guest's calls.");
  for (const auto& t : s.tenants) {
    for (const auto& g : t.guests)
      page.sample("sandpool_host_calls_total", {{"tenant", t.name}, {"guest", g.name}},
                  g.host_calls);
  }
  const char* previous = nullptr;
  for (const GuestSeries& series : kGuestSeries) {
    if (previous == nullptr || std::string_view(previous) != series.name)
      page.family(series.name, series.type, series.help);
    previous = series.name;
    for (const auto& t : s.tenants) {
      for (const auto& g : t.guests) {
        std::optional<Label> state;
        if (series.state != nullptr) state = Label{"state", series.state};
        page.sample(series.name, {{"tenant", t.name}, {"guest", g.name}}, series.value(g.stats),
                    state);
      }
    }
  }
}

}  // namespace

MetricsSnapshot takeMetricsSnapshot(const TenantRegistry& registry,
                                    RpcListener::ConnectionCounts connections) {
  MetricsSnapshot snapshot;
  snapshot.tenants.reserve(registry.tenants().size());
  for (const auto& tenant : registry.tenants()) {
    SnapshotVisitor visitor(*tenant, snapshot.tenants.emplace_back());
    registry.visitStats(*tenant, visitor);
  }
  snapshot.connections = connections;
  snapshot.logins_refused = registry.loginsRefused();
  return snapshot;
}

std::string renderMetrics(const MetricsSnapshot& s, uint64_t resident_bytes) {
  PageWriter page;
  writeGuestSeries(page, s);
  writeTenantSeries(page, s);
  page.family("sandpool_connections", "gauge", "Open RPC connections, by whether they logged in.");
  page.sample("sandpool_connections", {{"state", "authenticated"}}, s.connections.authenticated);
  page.sample("sandpool_connections", {{"state", "unauthenticated"}},
              s.connections.unauthenticated);
  page.family("sandpool_logins_refused_total", "counter", "Logins with an unknown token.");
  page.sample("sandpool_logins_refused_total", {}, s.logins_refused);
  page.family("sandpool_process_resident_memory_bytes", "gauge",
              "Resident memory of the sandpoold process.");
  page.sample("sandpool_process_resident_memory_bytes", {}, resident_bytes);
  return page.take();
}

uint64_t residentMemoryBytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size_pages = 0, resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  return resident_pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace sandpool::server
