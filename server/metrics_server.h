// The metrics and health endpoint (--listen-metrics; docs/server.md,
// "Metrics and health"): HTTP/1.1 by Boost.Beast on an Asio thread of its
// own, serving GET /metrics, /healthz and /readyz.
//
// Threads: its own Asio thread serves the connections; readiness is an
// atomic any thread sets. The page's data belongs to the KJ thread: a
// scrape posts a message to the KJ mailbox, whose delivery takes the
// snapshot there and posts it back to the Asio thread, which renders and
// writes it. The call path never waits on this server; the KJ thread
// spends the snapshot's copy per scrape. Constructed and destroyed on the
// KJ thread; destroyed before the mailbox's last drain (a late message
// finds the server closed and does nothing).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "server/kj_mailbox.h"
#include "server/metrics_page.h"
#include "vm/error.h"

namespace sandpool::server {

class MetricsServer {
 public:
  enum class Readiness { kStarting, kReady, kDraining };
  // Runs on the KJ thread.
  using Gather = std::function<MetricsSnapshot()>;

  // Bounds: open connections, request header and body bytes, and how long
  // a connection may take to send a request or a scrape to be gathered.
  static constexpr size_t kMaxConnections = 16;
  static constexpr uint32_t kMaxHeaderBytes = 8 << 10;
  static constexpr uint64_t kMaxBodyBytes = 4 << 10;
  static constexpr std::chrono::seconds kTimeout{10};

  MetricsServer(KjMailbox& mailbox, Gather gather);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds "HOST:PORT" (port 0: any free one) and starts serving; returns
  // the bound address.
  vm::Expected<std::string> listen(const std::string& address);

  void setReadiness(Readiness readiness) { readiness_.store(readiness); }

  struct Channel;
  class Session;

 private:
  void accept();

  KjMailbox& mailbox_;
  size_t sessions_ = 0;  // the Asio thread's
  std::atomic<Readiness> readiness_{Readiness::kStarting};
  std::shared_ptr<Channel> channel_;
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::thread thread_;
};

}  // namespace sandpool::server
