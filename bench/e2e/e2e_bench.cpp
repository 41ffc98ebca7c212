// Question: what does a warm guest call cost on top of the RPC round trip
// itself? Starts a real sandpoold, then measures with the same client a
// trivial `ping` (the RPC floor) and a warm call of add(i32, i32), at
// concurrency 1, 16 and 64, over TCP and over the Unix socket.
//
// The machine is usually shared, so ping and call alternate in rounds and
// the median round is reported.
//
//   e2e_bench [--calls N] [--rounds R] [--backend B] [-- extra sandpoold flags]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <kj/async-io.h>

#include "clients/cpp/client.h"
#include "tests/server/server_process.h"

namespace {

using namespace sandpool;

constexpr const char* kToken = "bench-token-0123456789";

struct Figures {
  double p50_us = 0, p99_us = 0, calls_per_s = 0;
};

Figures median(std::vector<Figures> rounds) {
  auto pick = [&](auto field) {
    std::vector<double> v;
    for (auto& r : rounds) v.push_back(r.*field);
    std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
    return v[v.size() / 2];
  };
  return {pick(&Figures::p50_us), pick(&Figures::p99_us), pick(&Figures::calls_per_s)};
}

Figures figures(const client::BenchResult& r) {
  if (r.errors != 0) {
    std::fprintf(stderr, "e2e_bench: %llu of %llu calls failed\n", static_cast<unsigned long long>(r.errors),
                 static_cast<unsigned long long>(r.calls));
    std::exit(1);
  }
  return {r.percentile(0.5).count() / 1000.0, r.percentile(0.99).count() / 1000.0, r.callsPerSecond()};
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t calls = 5000;
  unsigned rounds = 5;
  std::string backend = "emulated";
  std::vector<std::string> extra;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--calls" && i + 1 < argc) calls = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--rounds" && i + 1 < argc) rounds = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
    else if (a == "--backend" && i + 1 < argc) backend = argv[++i];
    else if (a == "--") {
      extra.assign(argv + i + 1, argv + argc);
      break;
    } else {
      std::fprintf(stderr, "usage: e2e_bench [--calls N] [--rounds R] [--backend B] [-- sandpoold flags]\n");
      return 2;
    }
  }

  testing::TempDir dir;
  auto tenants = dir.path() / "tenants.conf";
  std::ofstream(tenants) << "[bench]\ntoken = " << kToken << "\nmax_vms = 64\nmax_concurrent_calls = 256\nqueue_length = 1024\n";
  std::vector<std::string> args = {"--backend", backend, "--log-level", "warn", "--max-vms", "16"};
  args.insert(args.end(), extra.begin(), extra.end());
  testing::ServerProcess server(SANDPOOLD_BIN, dir.path() / "data", tenants, args);

  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  std::printf("e2e_bench: backend=%s cores=%u calls_per_round=%llu rounds=%u\n", backend.c_str(),
              std::thread::hardware_concurrency(), static_cast<unsigned long long>(calls), rounds);
  std::printf("%-5s %4s  %-5s %9s %9s %10s\n", "link", "conc", "what", "p50_us", "p99_us", "calls/s");

  bool uploaded = false;
  for (const std::string& address : {server.tcpAddress(), server.unixAddress()}) {
    const char* link = address.rfind("unix:", 0) == 0 ? "unix" : "tcp";
    auto conn = client::Connection::connect(io, address).wait(ws);
    auto tenant = conn->login(kToken).wait(ws);
    if (!uploaded) {
      std::ifstream in(GUEST_ADD, std::ios::binary);
      std::vector<char> elf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      auto up = tenant.uploadRequest();
      up.setName("add");
      up.setElf(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(elf.data()), elf.size()));
      auto result = up.send().wait(ws).getResult();
      if (result.isError()) {
        std::fprintf(stderr, "e2e_bench: upload failed: %s\n", client::describe(result.getError()).c_str());
        return 1;
      }
      uploaded = true;
    }
    auto& sp = conn->sandpool();
    auto ping = [&sp]() { return sp.pingRequest().send().then([](auto&&) { return true; }); };
    auto call = [&tenant]() {
      auto r = tenant.callRequest();
      r.setGuest("add");
      r.setFunction("add");
      auto args = r.initArgs(2);
      args[0].setI32(40);
      args[1].setI32(2);
      return r.send().then([](capnp::Response<rpc::Tenant::CallResults>&& response) {
        auto result = response.getResult();
        return result.isOk() && result.getOk().getValue().getI32() == 42;
      });
    };
    for (unsigned concurrency : {1u, 16u, 64u}) {
      // Warm-up: every VM the concurrency needs exists before measuring.
      client::runBench(ws, call, concurrency, calls / 5);
      client::runBench(ws, ping, concurrency, calls / 5);
      std::vector<Figures> ping_rounds, call_rounds;
      for (unsigned r = 0; r < rounds; ++r) {
        ping_rounds.push_back(figures(client::runBench(ws, ping, concurrency, calls)));
        call_rounds.push_back(figures(client::runBench(ws, call, concurrency, calls)));
      }
      Figures p = median(ping_rounds), c = median(call_rounds);
      std::printf("%-5s %4u  %-5s %9.1f %9.1f %10.0f\n", link, concurrency, "ping", p.p50_us, p.p99_us, p.calls_per_s);
      std::printf("%-5s %4u  %-5s %9.1f %9.1f %10.0f   p50 ratio %.2f, throughput ratio %.2f\n", link,
                  concurrency, "call", c.p50_us, c.p99_us, c.calls_per_s, c.p50_us / p.p50_us,
                  c.calls_per_s / p.calls_per_s);
      std::fflush(stdout);
    }
  }
  auto status = server.stop();
  return status == 0 ? 0 : 1;
}
