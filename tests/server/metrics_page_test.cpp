// The metrics page's text format, from a snapshot built by hand: what the
// server never produces from validated names, but the format must survive.
#include <string>

#include <gtest/gtest.h>

#include "server/metrics_page.h"

namespace sandpool::server {
namespace {

TEST(MetricsPage, EscapesLabelValuesAsTheFormatSays) {
  MetricsSnapshot snapshot;
  auto& tenant = snapshot.tenants.emplace_back();
  tenant.name = "a\"b\\c\nd";
  tenant.counters.queued = 3;
  const std::string page = renderMetrics(snapshot, 4096);
  EXPECT_NE(page.find("sandpool_queue_depth{tenant=\"a\\\"b\\\\c\\nd\"} 3\n"), std::string::npos)
      << page;
  EXPECT_NE(page.find("sandpool_process_resident_memory_bytes 4096\n"), std::string::npos);
}

TEST(MetricsPage, HistogramsAreCumulativeWithSumAndCount) {
  MetricsSnapshot snapshot;
  auto& tenant = snapshot.tenants.emplace_back();
  tenant.name = "t";
  auto& guest = tenant.guests.emplace_back();
  guest.name = "g";
  pool::LatencyHistogram total;
  total.add(std::chrono::microseconds(15));  // the 20 µs bucket
  total.add(std::chrono::seconds(60));       // past the last bound: +Inf only
  guest.durations[3] = total.snapshot();
  const std::string page = renderMetrics(snapshot, 0);
  const std::string series = "sandpool_call_duration_seconds";
  const std::string labels = "{tenant=\"t\",guest=\"g\",phase=\"total\"";
  EXPECT_NE(page.find(series + "_bucket" + labels + ",le=\"1e-05\"} 0\n"), std::string::npos)
      << page;
  EXPECT_NE(page.find(series + "_bucket" + labels + ",le=\"2e-05\"} 1\n"), std::string::npos);
  EXPECT_NE(page.find(series + "_bucket" + labels + ",le=\"30\"} 1\n"), std::string::npos);
  EXPECT_NE(page.find(series + "_bucket" + labels + ",le=\"+Inf\"} 2\n"), std::string::npos);
  EXPECT_NE(page.find(series + "_sum" + labels + "} 60.000015\n"), std::string::npos);
  EXPECT_NE(page.find(series + "_count" + labels + "} 2\n"), std::string::npos);
}

}  // namespace
}  // namespace sandpool::server
