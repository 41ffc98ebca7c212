// Question: once a caller gives up on a spinning call, how soon does its VM
// serve the next caller? (docs/rpc.md, "Cancellation".)
//
// One sandpoold, one tenant that runs one call at a time. Each round starts
// a call of misbehave's `spin` (a 100 s timeout), waits until the stats show
// it running, queues a call of `divide(8, 2)` from another connection, waits
// until the stats show it queued, and then gives up on the spinning call:
//   disconnect  the spinning call's client is a `sandpool call` process,
//               killed with SIGKILL (its socket closes, no cancellation sent)
//   cancel      the spinning call's promise is dropped on a connection that
//               stays open (the client sends the cancellation)
// The figure is the time from giving up to the queued call's answer; the
// same call's latency on an idle VM is printed beside it for scale.
//
//   cancel_bench [--rounds N] [-- extra sandpoold flags]
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <kj/async-io.h>

#include "bench/e2e/guest_bytes.h"
#include "clients/cpp/client.h"
#include "tests/server/server_process.h"

namespace {

using namespace sandpool;
using Clock = std::chrono::steady_clock;

constexpr const char* kToken = "cancel-token-0123456789";
constexpr uint32_t kSpinTimeoutMs = 100000;

struct Quantiles {
  double p50_us = 0, p99_us = 0, max_us = 0;
};

Quantiles quantiles(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  return {us[us.size() / 2], us[std::min(us.size() - 1, us.size() * 99 / 100)], us.back()};
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "cancel_bench: %s\n", what.c_str());
  std::exit(1);
}

double microsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

kj::Promise<capnp::Response<rpc::Tenant::CallResults>> divide(rpc::Tenant::Client& tenant) {
  auto request = tenant.callRequest();
  request.setGuest("misbehave");
  request.setFunction("divide");
  auto args = request.initArgs(2);
  args[0].setI32(8);
  args[1].setI32(2);
  return request.send();
}

void expectFour(capnp::Response<rpc::Tenant::CallResults>& response) {
  auto result = response.getResult();
  if (!result.isOk()) fail("divide failed: " + client::describe(result.getError().getError()));
  if (result.getOk().getValue().getI32() != 4) fail("divide(8, 2) did not answer 4");
}

// Polls the tenant's stats until `ready` holds (a bench may poll: nothing
// here is asserted about time).
void waitForStats(kj::WaitScope& ws, kj::Timer& timer, rpc::Tenant::Client& tenant,
                  const std::function<bool(rpc::TenantStats::Reader)>& ready) {
  const auto give_up = Clock::now() + std::chrono::seconds(60);
  while (true) {
    auto response = tenant.statsRequest().send().wait(ws);
    if (ready(response.getStats())) return;
    if (Clock::now() > give_up) fail("the stats never showed the state waited for");
    timer.afterDelay(1 * kj::MILLISECONDS).wait(ws);
  }
}

bool oneBusy(rpc::TenantStats::Reader stats) {
  return stats.getGuests().size() == 1 && stats.getGuests()[0].getBusy() == 1;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned rounds = 30;
  std::vector<std::string> extra;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--rounds" && i + 1 < argc) {
      rounds = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
    } else if (a == "--") {
      extra.assign(argv + i + 1, argv + argc);
      break;
    } else {
      std::fprintf(stderr, "usage: cancel_bench [--rounds N] [-- sandpoold flags]\n");
      return 2;
    }
  }
  if (rounds == 0) rounds = 1;

  testing::TempDir dir;
  auto tenants = dir.path() / "tenants.conf";
  std::ofstream(tenants) << "[solo]\ntoken = " << kToken
                         << "\nmax_concurrent_calls = 1\nqueue_length = 2\n";
  std::vector<std::string> args = {"--backend", "emulated", "--log-level", "warn"};
  args.insert(args.end(), extra.begin(), extra.end());
  testing::ServerProcess server(SANDPOOLD_BIN, dir.path() / "data", tenants, args);

  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  auto& timer = io.provider->getTimer();
  auto waiter_conn = client::Connection::connect(io, server.unixAddress()).wait(ws);
  auto waiter = waiter_conn->login(kToken).wait(ws);
  {
    const auto elf = bench::guestBytes(GUEST_MISBEHAVE);
    auto up = waiter.uploadRequest();
    up.setName("misbehave");
    up.setElf(kj::arrayPtr(elf.data(), elf.size()));
    auto result = up.send().wait(ws).getResult();
    if (result.isError()) fail("upload failed: " + client::describe(result.getError()));
  }

  std::vector<double> idle_us, disconnect_us, cancel_us;
  for (unsigned round = 0; round < rounds; ++round) {
    {
      const auto start = Clock::now();
      auto response = divide(waiter).wait(ws);
      idle_us.push_back(microsSince(start));
      expectFour(response);
    }
    {
      testing::ChildProcess spinner(
          SANDPOOL_CLI_BIN, {"--connect", server.unixAddress(), "--token", kToken, "--timeout-ms",
                             std::to_string(kSpinTimeoutMs), "call", "misbehave", "spin"});
      waitForStats(ws, timer, waiter, oneBusy);
      auto queued = divide(waiter);
      waitForStats(ws, timer, waiter, [](auto stats) { return stats.getQueued() == 1; });
      const auto start = Clock::now();
      spinner.signal(SIGKILL);
      auto response = queued.wait(ws);
      disconnect_us.push_back(microsSince(start));
      expectFour(response);
    }
    {
      auto spinner_conn = client::Connection::connect(io, server.unixAddress()).wait(ws);
      auto spinner = spinner_conn->login(kToken).wait(ws);
      auto spin = spinner.callRequest();
      spin.setGuest("misbehave");
      spin.setFunction("spin");
      spin.setTimeoutMs(kSpinTimeoutMs);
      auto spinning = kj::heap(spin.send());
      waitForStats(ws, timer, waiter, oneBusy);
      auto queued = divide(waiter);
      waitForStats(ws, timer, waiter, [](auto stats) { return stats.getQueued() == 1; });
      const auto start = Clock::now();
      spinning = nullptr;
      auto response = queued.wait(ws);
      cancel_us.push_back(microsSince(start));
      expectFour(response);
    }
  }

  std::printf("cancel_bench: rounds=%u extra_flags=", rounds);
  for (const auto& flag : extra) std::printf("%s ", flag.c_str());
  std::printf("\n%-44s %10s %10s %10s\n", "", "p50_us", "p99_us", "max_us");
  const std::pair<const char*, std::vector<double>*> rows[] = {
      {"divide on an idle VM (for scale)", &idle_us},
      {"give-up to answer: client killed", &disconnect_us},
      {"give-up to answer: call cancelled", &cancel_us}};
  for (const auto& [name, samples] : rows) {
    const Quantiles q = quantiles(*samples);
    std::printf("%-44s %10.1f %10.1f %10.1f\n", name, q.p50_us, q.p99_us, q.max_us);
  }
  return 0;
}
