// Question: what does a warm guest call cost on top of the RPC round trip
// itself? Starts a real sandpoold, then measures with the same client a
// trivial `ping` (the RPC floor) and a warm call of add(i32, i32), at
// concurrency 1, 16 and 64, over TCP and over the Unix socket.
//
// The machine is usually shared, so ping and call alternate in rounds and
// the median round is reported. Besides latency and throughput it reports
// the CPU time each operation cost: the whole server, its RPC (main)
// thread, and the client (this process's only thread), from the kernel's
// per-thread run times.
//
// The client polls for replies while several calls are out, as
// `sandpool bench` does (--client-poll-us 0: it sleeps in epoll instead).
//
// --scrape-metrics: the server serves --listen-metrics, and a thread of
// this process fetches /metrics over one keep-alive connection for the
// whole run, back to back or every --scrape-interval-ms (the cost of
// metrics while a scraper hammers them; `-- --listen-metrics 127.0.0.1:0`
// alone: metrics on, not scraped).
//
//   e2e_bench [--calls N] [--rounds R] [--backend B] [--client-poll-us N] [--scrape-metrics]
//   [--scrape-interval-ms N] [-- extra sandpoold flags]
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <kj/async-io.h>

#include "bench/e2e/guest_bytes.h"
#include "clients/cpp/client.h"
#include "tests/server/server_process.h"

namespace {

using namespace sandpool;

constexpr const char* kToken = "bench-token-0123456789";

struct Figures {
  double p50_us = 0, p99_us = 0, calls_per_s = 0;
  double server_cpu_us = 0, rpc_cpu_us = 0, client_cpu_us = 0;  // per operation
  // Calls only: the server's own timing (the reply's Timing), medians.
  double server_total_us = 0, guest_run_us = 0;
};

Figures median(std::vector<Figures> rounds) {
  auto pick = [&](auto field) {
    std::vector<double> v;
    for (auto& r : rounds) v.push_back(r.*field);
    std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
    return v[v.size() / 2];
  };
  return {pick(&Figures::p50_us),          pick(&Figures::p99_us),
          pick(&Figures::calls_per_s),     pick(&Figures::server_cpu_us),
          pick(&Figures::rpc_cpu_us),      pick(&Figures::client_cpu_us),
          pick(&Figures::server_total_us), pick(&Figures::guest_run_us)};
}

// Nanoseconds a thread of `pid` has run, from /proc/PID/task/TID/schedstat.
uint64_t threadRunNs(pid_t pid, const std::string& tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + tid + "/schedstat");
  uint64_t ns = 0;
  in >> ns;
  return ns;
}

struct CpuSample {
  uint64_t server_ns = 0, rpc_ns = 0, client_ns = 0;
};

CpuSample sampleCpu(pid_t server) {
  CpuSample s;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/" + std::to_string(server) + "/task")) {
    s.server_ns += threadRunNs(server, task.path().filename().string());
  }
  s.rpc_ns = threadRunNs(server, std::to_string(server));
  timespec self{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &self);
  s.client_ns =
      static_cast<uint64_t>(self.tv_sec) * 1000000000ull + static_cast<uint64_t>(self.tv_nsec);
  return s;
}

Figures measure(kj::WaitScope& ws, pid_t server, std::function<kj::Promise<bool>()> op,
                unsigned concurrency, uint64_t calls, std::chrono::microseconds poll) {
  const CpuSample before = sampleCpu(server);
  client::BenchResult r = client::runBench(ws, std::move(op), concurrency, calls, poll);
  const CpuSample after = sampleCpu(server);
  if (r.errors != 0) {
    std::fprintf(stderr, "e2e_bench: %llu of %llu calls failed\n",
                 static_cast<unsigned long long>(r.errors),
                 static_cast<unsigned long long>(r.calls));
    std::exit(1);
  }
  auto per_op_us = [&](uint64_t CpuSample::*field) {
    return static_cast<double>(after.*field - before.*field) / 1000.0 /
           static_cast<double>(r.calls);
  };
  return {r.percentile(0.5).count() / 1000.0,
          r.percentile(0.99).count() / 1000.0,
          r.callsPerSecond(),
          per_op_us(&CpuSample::server_ns),
          per_op_us(&CpuSample::rpc_ns),
          per_op_us(&CpuSample::client_ns)};
}

}  // namespace

// Fetches http://ADDRESS/metrics back to back until `stop`; counts the
// pages.
class MetricsScraper {
 public:
  MetricsScraper(const std::string& address, std::chrono::milliseconds interval)
      : thread_([this, address, interval] { scrape(address, interval); }) {}
  ~MetricsScraper() {
    stop_.store(true);
    thread_.join();
  }
  uint64_t pages() const { return pages_.load(); }

 private:
  void scrape(const std::string& address, std::chrono::milliseconds interval) {
    namespace beast = boost::beast;
    namespace http = beast::http;
    boost::asio::io_context io;
    boost::asio::ip::tcp::resolver resolver(io);
    beast::tcp_stream stream(io);
    const size_t colon = address.rfind(':');
    stream.connect(resolver.resolve(address.substr(0, colon), address.substr(colon + 1)));
    http::request<http::empty_body> request(http::verb::get, "/metrics", 11);
    request.keep_alive(true);
    beast::flat_buffer buffer;
    while (!stop_.load()) {
      http::write(stream, request);
      http::response<http::string_body> response;
      http::read(stream, buffer, response);
      if (response.result() != http::status::ok) {
        std::fprintf(stderr, "e2e_bench: /metrics answered %u\n", response.result_int());
        std::exit(1);
      }
      pages_.fetch_add(1);
      std::this_thread::sleep_for(interval);
    }
  }

  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> pages_{0};
  std::thread thread_;
};

int main(int argc, char** argv) {
  uint64_t calls = 30000;
  unsigned rounds = 5;
  std::chrono::microseconds poll = client::kDefaultBenchPoll;
  std::string backend = "emulated";
  std::vector<std::string> extra;
  bool scrape_metrics = false;
  std::chrono::milliseconds scrape_interval{0};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--calls" && i + 1 < argc)
      calls = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--rounds" && i + 1 < argc)
      rounds = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
    else if (a == "--backend" && i + 1 < argc)
      backend = argv[++i];
    else if (a == "--client-poll-us" && i + 1 < argc)
      poll = std::chrono::microseconds(std::strtoull(argv[++i], nullptr, 10));
    else if (a == "--scrape-metrics")
      scrape_metrics = true;
    else if (a == "--scrape-interval-ms" && i + 1 < argc)
      scrape_interval = std::chrono::milliseconds(std::strtoull(argv[++i], nullptr, 10));
    else if (a == "--") {
      extra.assign(argv + i + 1, argv + argc);
      break;
    } else {
      std::fprintf(stderr,
                   "usage: e2e_bench [--calls N] [--rounds R] [--backend B] [--client-poll-us N]"
                   " [--scrape-metrics] [--scrape-interval-ms N] [-- sandpoold flags]\n");
      return 2;
    }
  }

  testing::TempDir dir;
  auto tenants = dir.path() / "tenants.conf";
  std::ofstream(tenants) << "[bench]\ntoken = " << kToken
                         << "\nmax_vms = 64\nmax_concurrent_calls = 256\nqueue_length = 1024\n";
  std::vector<std::string> args = {"--backend", backend, "--log-level", "warn", "--max-vms", "16"};
  args.insert(args.end(), extra.begin(), extra.end());
  if (scrape_metrics) args.insert(args.end(), {"--listen-metrics", "127.0.0.1:0"});
  testing::ServerProcess server(SANDPOOLD_BIN, dir.path() / "data", tenants, args);
  std::optional<MetricsScraper> scraper;
  if (scrape_metrics) scraper.emplace(server.metricsAddress(), scrape_interval);

  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  std::printf("e2e_bench: backend=%s cores=%u calls_per_round=%llu rounds=%u client_poll_us=%lld\n",
              backend.c_str(), std::thread::hardware_concurrency(),
              static_cast<unsigned long long>(calls), rounds, static_cast<long long>(poll.count()));
  std::printf("%-5s %4s  %-5s %9s %9s %10s  %s\n", "link", "conc", "what", "p50_us", "p99_us",
              "calls/s", "cpu_us/op: server (rpc thread) client");

  bool uploaded = false;
  for (const std::string& address : {server.tcpAddress(), server.unixAddress()}) {
    const char* link = address.rfind("unix:", 0) == 0 ? "unix" : "tcp";
    auto conn = client::Connection::connect(io, address).wait(ws);
    auto tenant = conn->login(kToken).wait(ws);
    if (!uploaded) {
      const auto elf = bench::guestBytes(GUEST_ADD);
      auto up = tenant.uploadRequest();
      up.setName("add");
      up.setElf(kj::arrayPtr(elf.data(), elf.size()));
      auto result = up.send().wait(ws).getResult();
      if (result.isError()) {
        std::fprintf(stderr, "e2e_bench: upload failed: %s\n",
                     client::describe(result.getError()).c_str());
        return 1;
      }
      uploaded = true;
    }
    auto& sp = conn->sandpool();
    auto ping = [&sp]() { return sp.pingRequest().send().then([](auto&&) { return true; }); };
    // The server's timing of each call of the current round.
    std::vector<uint64_t> total_ns, run_ns;
    auto call = [&tenant, &total_ns, &run_ns]() {
      auto r = tenant.callRequest();
      r.setGuest("add");
      r.setFunction("add");
      auto args = r.initArgs(2);
      args[0].setI32(40);
      args[1].setI32(2);
      return r.send().then(
          [&total_ns, &run_ns](capnp::Response<rpc::Tenant::CallResults>&& response) {
            auto result = response.getResult();
            if (!result.isOk()) return false;
            total_ns.push_back(result.getOk().getTiming().getTotalNs());
            run_ns.push_back(result.getOk().getTiming().getRunNs());
            return result.getOk().getValue().getI32() == 42;
          });
    };
    for (unsigned concurrency : {1u, 16u, 64u}) {
      // Warm-up: every VM the concurrency needs exists before measuring.
      client::runBench(ws, call, concurrency, calls / 5, poll);
      client::runBench(ws, ping, concurrency, calls / 5, poll);
      std::vector<Figures> ping_rounds, call_rounds;
      for (unsigned r = 0; r < rounds; ++r) {
        ping_rounds.push_back(measure(ws, server.process().pid(), ping, concurrency, calls, poll));
        total_ns.clear();
        run_ns.clear();
        call_rounds.push_back(measure(ws, server.process().pid(), call, concurrency, calls, poll));
        call_rounds.back().server_total_us = client::medianUs(total_ns);
        call_rounds.back().guest_run_us = client::medianUs(run_ns);
      }
      Figures p = median(ping_rounds), c = median(call_rounds);
      auto row = [&](const char* what, const Figures& f) {
        std::printf("%-5s %4u  %-5s %9.1f %9.1f %10.0f  %6.1f (%4.1f) %5.1f", link, concurrency,
                    what, f.p50_us, f.p99_us, f.calls_per_s, f.server_cpu_us, f.rpc_cpu_us,
                    f.client_cpu_us);
      };
      row("ping", p);
      std::printf("\n");
      row("call", c);
      std::printf(
          "   p50 ratio %.2f, throughput ratio %.2f; server p50: total %.1f us, guest %.1f us\n",
          c.p50_us / p.p50_us, c.calls_per_s / p.calls_per_s, c.server_total_us, c.guest_run_us);
      std::fflush(stdout);
    }
  }
  if (scraper) {
    std::printf("metrics pages scraped: %llu\n", static_cast<unsigned long long>(scraper->pages()));
    scraper.reset();
  }
  auto status = server.stop();
  return status == 0 ? 0 : 1;
}
