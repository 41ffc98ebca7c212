// Question: how many warm VMs does one sandpoold hold, what does each cost
// the process, and what limits first?
// Starts a real sandpoold (emulated backend) with --tenants tenants of
// --guests small guests each (`add`, 8 MiB of guest memory, 64 KiB stack and
// buffers). Each step configures the guests' min_warm so that together they
// keep N warm VMs, waits until stats show them warm, and prints what the
// server process holds then (from /proc/PID: smaps_rollup Pss and Private,
// maps lines, fd entries, Threads) per warm VM beyond the server with its
// guests uploaded and no VM, the seconds to warm the step, and the client
// side p50/p99 of warm calls spread uniformly at random over all guests and
// of calls all to one hot guest. Steps stop at the first that cannot be made
// warm (no progress for --stall-ms, or a call refused as overloaded), or past
// --max-vms. Last, every guest is configured min_warm 0 and the bench waits
// for the server's idle timer (--idle-time-ms) to scale them to zero, and
// prints the Private memory left against the baseline.
// docs/performance.md, "Density", has a run and the machine.
//
//   density_bench [--steps 250,1000,2500,5000] [--tenants T] [--guests G] [--calls N]
//                 [--max-vms N] [--idle-time-ms MS] [--stall-ms MS] [-- extra sandpoold flags]
#include <dirent.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <kj/async-io.h>

#include "bench/e2e/guest_bytes.h"
#include "clients/cpp/client.h"
#include "tests/server/server_process.h"

namespace {

using namespace sandpool;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kGuestMemoryBytes = 8ull << 20;  // the least that holds the image at 4 MiB
constexpr uint64_t kGuestBufferBytes = 64ull << 10;

// What the server process holds, from /proc.
struct ProcessFootprint {
  uint64_t pss_kib = 0, private_kib = 0, mappings = 0, fds = 0, threads = 0;
};

uint64_t fieldKib(const std::string& file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  uint64_t total = 0;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) total += std::strtoull(line.c_str() + key.size(), nullptr, 10);
  }
  return total;
}

ProcessFootprint footprint(pid_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  ProcessFootprint f;
  f.pss_kib = fieldKib(proc + "/smaps_rollup", "Pss:");
  f.private_kib = fieldKib(proc + "/smaps_rollup", "Private_Clean:") +
                  fieldKib(proc + "/smaps_rollup", "Private_Dirty:");
  f.threads = fieldKib(proc + "/status", "Threads:");
  std::ifstream maps(proc + "/maps");
  std::string line;
  while (std::getline(maps, line)) ++f.mappings;
  if (DIR* dir = opendir((proc + "/fd").c_str())) {
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++f.fds;
    }
    closedir(dir);
  }
  return f;
}

struct GuestRef {
  size_t tenant;
  std::string name;
};

class DensityRun {
 public:
  DensityRun(kj::AsyncIoContext& io, std::vector<rpc::Tenant::Client> tenants,
             std::vector<GuestRef> guests)
      : io_(io), tenants_(std::move(tenants)), guests_(std::move(guests)) {}

  // Warm VMs of all guests together, from stats.
  uint64_t warm() {
    uint64_t total = 0;
    for (auto& tenant : tenants_) {
      auto response = tenant.statsRequest().send().wait(io_.waitScope);
      for (auto g : response.getStats().getGuests()) total += g.getWarm();
    }
    return total;
  }

  // Gives the guests min_warm VMs that add up to `vms`; false if refused.
  bool configure(uint64_t vms) {
    for (size_t i = 0; i < guests_.size(); ++i) {
      const uint32_t min_warm =
          static_cast<uint32_t>(vms / guests_.size() + (i < vms % guests_.size() ? 1 : 0));
      auto request = tenants_[guests_[i].tenant].configureRequest();
      request.setGuest(guests_[i].name);
      request.getSettings().setMinWarm(min_warm);
      request.getSettings().setMaxVms(std::max<uint32_t>(min_warm, 1));
      auto response = request.send().wait(io_.waitScope);
      if (response.getResult().isError()) {
        std::fprintf(stderr, "density_bench: configure %s min_warm %u: %s\n",
                     guests_[i].name.c_str(), min_warm,
                     client::describe(response.getResult().getError()).c_str());
        return false;
      }
    }
    return true;
  }

  // One add call to guest `i`: its latency in µs, or a negative value if it
  // was refused as overloaded (any other error ends the bench).
  double call(size_t i) {
    auto request = tenants_[guests_[i].tenant].callRequest();
    request.setGuest(guests_[i].name);
    request.setFunction("add");
    auto args = request.initArgs(2);
    args[0].setI32(40);
    args[1].setI32(2);
    const auto start = Clock::now();
    auto response = request.send().wait(io_.waitScope);
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
    auto result = response.getResult();
    if (result.isOk()) return us;
    if (result.getError().getError().getCode() == rpc::ErrorCode::OVERLOADED) return -1;
    std::fprintf(stderr, "density_bench: call to %s failed: %s\n", guests_[i].name.c_str(),
                 client::describe(result.getError().getError()).c_str());
    std::exit(1);
  }

  // One call to every guest, so that none reaches the idle time while the
  // bench waits on another; the number refused as overloaded.
  size_t touchAll() {
    size_t overloaded = 0;
    for (size_t i = 0; i < guests_.size(); ++i) overloaded += call(i) < 0 ? 1 : 0;
    return overloaded;
  }

  size_t guestCount() const { return guests_.size(); }
  void pause(std::chrono::milliseconds ms) {
    io_.provider->getTimer().afterDelay(ms.count() * kj::MILLISECONDS).wait(io_.waitScope);
  }

 private:
  kj::AsyncIoContext& io_;
  std::vector<rpc::Tenant::Client> tenants_;
  std::vector<GuestRef> guests_;
};

struct Latency {
  double p50_us = 0, p99_us = 0;
  size_t overloaded = 0;
};

Latency quantiles(std::vector<double> us, size_t overloaded) {
  if (us.empty()) return {0, 0, overloaded};
  std::sort(us.begin(), us.end());
  return {us[us.size() / 2], us[std::min(us.size() - 1, us.size() * 99 / 100)], overloaded};
}

// `calls` calls, each to the guest `pick()` names.
template <typename Pick>
Latency measureCalls(DensityRun& run, uint64_t calls, Pick pick) {
  std::vector<double> us;
  size_t overloaded = 0;
  for (uint64_t i = 0; i < calls; ++i) {
    const double t = run.call(pick());
    if (t < 0)
      ++overloaded;
    else
      us.push_back(t);
  }
  return quantiles(std::move(us), overloaded);
}

std::vector<uint64_t> parseSteps(const std::string& list) {
  std::vector<uint64_t> steps;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) steps.push_back(std::strtoull(item.c_str(), nullptr, 10));
  return steps;
}

double perVmKib(uint64_t now_kib, uint64_t base_kib, uint64_t vms) {
  return vms == 0 ? 0.0 : (static_cast<double>(now_kib) - static_cast<double>(base_kib)) / vms;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<uint64_t> steps = {250, 1000, 2500, 5000};
  unsigned tenant_count = 4, guests_per_tenant = 25;
  uint64_t calls = 2000, max_vms = 0;
  uint32_t idle_time_ms = 60000, stall_ms = 10000;
  std::vector<std::string> extra;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto number = [&] { return std::strtoull(argv[++i], nullptr, 10); };
    if (a == "--steps" && i + 1 < argc)
      steps = parseSteps(argv[++i]);
    else if (a == "--tenants" && i + 1 < argc)
      tenant_count = static_cast<unsigned>(number());
    else if (a == "--guests" && i + 1 < argc)
      guests_per_tenant = static_cast<unsigned>(number());
    else if (a == "--calls" && i + 1 < argc)
      calls = number();
    else if (a == "--max-vms" && i + 1 < argc)
      max_vms = number();
    else if (a == "--idle-time-ms" && i + 1 < argc)
      idle_time_ms = static_cast<uint32_t>(number());
    else if (a == "--stall-ms" && i + 1 < argc)
      stall_ms = static_cast<uint32_t>(number());
    else if (a == "--") {
      extra.assign(argv + i + 1, argv + argc);
      break;
    } else {
      std::fprintf(stderr,
                   "usage: density_bench [--steps 250,1000,2500,5000] [--tenants T] [--guests G]"
                   " [--calls N] [--max-vms N] [--idle-time-ms MS] [--stall-ms MS]"
                   " [-- sandpoold flags]\n");
      return 2;
    }
  }
  if (tenant_count == 0 || guests_per_tenant == 0 || steps.empty() || calls == 0) {
    std::fprintf(stderr, "density_bench: tenants, guests, steps and calls must not be empty\n");
    return 2;
  }
  const uint64_t vm_cap = max_vms != 0 ? max_vms : *std::max_element(steps.begin(), steps.end());

  testing::TempDir dir;
  auto tenants_file = dir.path() / "tenants.conf";
  {
    std::ofstream out(tenants_file);
    for (unsigned t = 0; t < tenant_count; ++t)
      out << "[t" << t << "]\ntoken = density-token-" << t << "-0123456789\nmax_vms = " << vm_cap
          << "\nmax_guests = " << guests_per_tenant
          << "\nmax_memory_mib = " << (vm_cap * kGuestMemoryBytes >> 20) + 1 << "\n\n";
  }
  std::vector<std::string> args = {
      "--backend",  "emulated", "--log-level",    "warn",
      "--min-warm", "0",        "--idle-time-ms", std::to_string(idle_time_ms)};
  args.insert(args.end(), extra.begin(), extra.end());
  testing::ServerProcess server(SANDPOOLD_BIN, dir.path() / "data", tenants_file, args);
  const pid_t pid = server.process().pid();
  const ProcessFootprint empty = footprint(pid);

  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  std::vector<kj::Own<client::Connection>> connections;
  std::vector<rpc::Tenant::Client> tenants;
  std::vector<GuestRef> guests;
  const auto elf = bench::guestBytes(GUEST_ADD);
  for (unsigned t = 0; t < tenant_count; ++t) {
    connections.push_back(client::Connection::connect(io, server.unixAddress()).wait(ws));
    tenants.push_back(
        connections.back()->login("density-token-" + std::to_string(t) + "-0123456789").wait(ws));
    for (unsigned g = 0; g < guests_per_tenant; ++g) {
      const std::string name = "add" + std::to_string(g);
      auto up = tenants.back().uploadRequest();
      up.setName(name);
      up.setElf(kj::arrayPtr(elf.data(), elf.size()));
      auto vm = up.initVmSettings();
      vm.setMemoryBytes(kGuestMemoryBytes);
      vm.setStackBytes(kGuestBufferBytes);
      vm.setInputBytes(kGuestBufferBytes);
      vm.setOutputBytes(kGuestBufferBytes);
      auto result = up.send().wait(ws).getResult();
      if (result.isError()) {
        std::fprintf(stderr, "density_bench: upload of %s failed: %s\n", name.c_str(),
                     client::describe(result.getError()).c_str());
        return 1;
      }
      guests.push_back({t, name});
    }
  }
  DensityRun run(io, std::move(tenants), std::move(guests));
  const ProcessFootprint base = footprint(pid);

  std::printf(
      "density_bench: cores=%u tenants=%u guests=%zu calls_per_mix=%llu idle_time_ms=%u"
      " extra_flags=",
      std::thread::hardware_concurrency(), tenant_count, run.guestCount(),
      static_cast<unsigned long long>(calls), idle_time_ms);
  for (const auto& flag : extra) std::printf("%s ", flag.c_str());
  std::printf(
      "\nempty server: Pss %llu KiB, Private %llu KiB, %llu mappings, %llu fds, %llu threads\n",
      static_cast<unsigned long long>(empty.pss_kib),
      static_cast<unsigned long long>(empty.private_kib),
      static_cast<unsigned long long>(empty.mappings), static_cast<unsigned long long>(empty.fds),
      static_cast<unsigned long long>(empty.threads));
  std::printf(
      "guests uploaded, no VM (the baseline): Pss %llu KiB, Private %llu KiB, %llu mappings, "
      "%llu fds, %llu threads\n",
      static_cast<unsigned long long>(base.pss_kib),
      static_cast<unsigned long long>(base.private_kib),
      static_cast<unsigned long long>(base.mappings), static_cast<unsigned long long>(base.fds),
      static_cast<unsigned long long>(base.threads));
  std::printf("%8s %8s %9s %10s %11s %9s %5s %7s %8s %9s %9s %9s %9s\n", "wanted", "warm", "warm_s",
              "pss/VM_KiB", "priv/VM_KiB", "mappings", "fds", "threads", "called/VM", "spread_p50",
              "spread_p99", "hot_p50", "hot_p99");
  std::printf("%8s %8s %9s %10s %11s %9s %5s %7s %8s %9s %9s %9s %9s\n", "", "", "", "", "", "", "",
              "", "priv_KiB", "us", "us", "us", "us");

  std::mt19937_64 random(42);
  std::string stopped = "every step held";
  for (const uint64_t wanted : steps) {
    if (max_vms != 0 && wanted > max_vms) {
      stopped = "--max-vms " + std::to_string(max_vms);
      break;
    }
    const auto start = Clock::now();
    size_t overloaded = run.touchAll();
    if (!run.configure(wanted)) {
      stopped = "configure refused";
      break;
    }
    uint64_t warm = run.warm(), best = warm;
    auto last_progress = Clock::now(), last_touch = Clock::now();
    while (warm < wanted && Clock::now() - last_progress < std::chrono::milliseconds(stall_ms)) {
      run.pause(std::chrono::milliseconds(100));
      if (Clock::now() - last_touch > std::chrono::seconds(5)) {
        overloaded += run.touchAll();
        last_touch = Clock::now();
      }
      warm = run.warm();
      if (warm > best) {
        best = warm;
        last_progress = Clock::now();
      }
    }
    const double warm_s = std::chrono::duration<double>(Clock::now() - start).count();
    const ProcessFootprint idle = footprint(pid);
    const Latency spread =
        measureCalls(run, calls, [&] { return static_cast<size_t>(random() % run.guestCount()); });
    const Latency hot = measureCalls(run, calls, [] { return size_t{0}; });
    const ProcessFootprint called = footprint(pid);
    overloaded += spread.overloaded + hot.overloaded;
    std::printf("%8llu %8llu %9.1f %10.1f %11.1f %9llu %5llu %7llu %8.1f %9.1f %9.1f %9.1f %9.1f\n",
                static_cast<unsigned long long>(wanted), static_cast<unsigned long long>(warm),
                warm_s, perVmKib(idle.pss_kib, base.pss_kib, warm),
                perVmKib(idle.private_kib, base.private_kib, warm),
                static_cast<unsigned long long>(idle.mappings),
                static_cast<unsigned long long>(idle.fds),
                static_cast<unsigned long long>(idle.threads),
                perVmKib(called.private_kib, base.private_kib, warm), spread.p50_us, spread.p99_us,
                hot.p50_us, hot.p99_us);
    std::fflush(stdout);
    if (warm < wanted || overloaded > 0) {
      stopped = "step " + std::to_string(wanted) + ": " + std::to_string(warm) + " warm, " +
                std::to_string(overloaded) + " calls overloaded";
      break;
    }
  }
  std::printf("stopped by: %s\n", stopped.c_str());
  if (auto line = server.process().waitForLine("event=host_limit", std::chrono::milliseconds(0)))
    std::printf("server: %s\n", line->c_str());

  // Scale to zero: no guest keeps VMs, the idle timer drops them.
  const auto zero_start = Clock::now();
  if (!run.configure(0)) return 1;
  uint64_t warm = run.warm();
  const auto zero_deadline =
      zero_start + std::chrono::milliseconds(idle_time_ms) * 3 + std::chrono::seconds(60);
  while (warm > 0 && Clock::now() < zero_deadline) {
    run.pause(std::chrono::milliseconds(200));
    warm = run.warm();
  }
  const ProcessFootprint zero = footprint(pid);
  std::printf(
      "scaled to zero: %llu warm after %.1f s; Private %llu KiB (baseline %llu KiB, "
      "empty server %llu KiB: %+lld KiB vs the baseline), %llu mappings, %llu threads\n",
      static_cast<unsigned long long>(warm),
      std::chrono::duration<double>(Clock::now() - zero_start).count(),
      static_cast<unsigned long long>(zero.private_kib),
      static_cast<unsigned long long>(base.private_kib),
      static_cast<unsigned long long>(empty.private_kib),
      static_cast<long long>(zero.private_kib) - static_cast<long long>(base.private_kib),
      static_cast<unsigned long long>(zero.mappings),
      static_cast<unsigned long long>(zero.threads));
  return warm == 0 ? 0 : 1;
}
