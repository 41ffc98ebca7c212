// sandpool: the command-line client of sandpoold. See docs/server.md.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <kj/async-io.h>
#include <kj/debug.h>

#include "clients/cpp/client.h"
#include "common/untrusted_text.h"

namespace {

using namespace sandpool;

constexpr const char* kUsage = R"(Usage: sandpool [options] VERB [ARGS...]

Verbs:
  ping                         round trip to the server
  version                      the server's protocol and release
  info                         this tenant's name and quota
  upload NAME FILE [--replace] [VM OPTIONS]
                               upload a guest ELF (prints its exports)
  list                         this tenant's guests and their functions
  remove NAME                  delete a guest
  call GUEST FUNCTION [ARG...] call a function; arguments are parsed by the
                               function's parameter types (bytes as hex)
  stats                        pool statistics of this tenant
  configure GUEST [--min-warm N --max-vms N] [VM OPTIONS]
                               change a guest's pool within the quota, or
                               its VMs (they boot again; docs/rpc.md)
  bench ping | bench GUEST FUNCTION [ARG...]
                               N calls at a given concurrency: latency
                               percentiles and calls per second

Options:
  --connect ADDR     HOST:PORT, tcp:HOST:PORT or unix:PATH
                     (default: $SANDPOOL_CONNECT or 127.0.0.1:7300)
  --token TOKEN      tenant token (default: $SANDPOOL_TOKEN)
  --timeout-ms N     call: shorten the server's call timeout
  --timing           call: print the server's timing of the call on stderr
  --kv KEY=VALUE     call/bench: serve the host function kv_get(string) ->
                     string to the guest from these pairs (repeatable)
  --concurrency N    bench: calls in flight (default 1)
  --calls N          bench: calls to measure (default 10000)
  --warmup N         bench: calls before measuring (default 200)
  --poll-us N        bench: with several calls out, poll for replies (yielding
                     the CPU) until N us pass without one, then sleep until
                     the next; 0 always sleeps (default 1000)
  --help             this text

VM options (upload, configure; unset: the server's default, or unchanged):
  --memory-mib N     guest memory of each VM (a multiple of 2)
  --stack-kib N      stack (a multiple of 4)
  --input-kib N      input buffer: a call's arguments (a multiple of 4)
  --output-kib N     output buffer: a call's result (a multiple of 4)
  --max-host-calls N host calls one call may make

Exit status: 0 success, 1 the server refused or the call failed,
2 usage error, 3 connection or transport failure.
)";

struct Args {
  std::string connect;
  std::string token;
  std::vector<std::string> positional;
  std::map<std::string, std::string> kv;
  bool replace = false;
  bool timing = false;
  uint32_t timeout_ms = 0;
  unsigned concurrency = 1;
  uint64_t calls = 10000;
  uint64_t warmup = 200;
  std::chrono::microseconds poll = client::kDefaultBenchPoll;
  std::optional<uint32_t> min_warm, max_vms;
  uint64_t memory_mib = 0, stack_kib = 0, input_kib = 0, output_kib = 0;  // 0: not set
  uint32_t max_host_calls = 0;
  bool vm_settings = false;  // any of the above was given
};

struct UsageError {
  std::string message;
};

// A decimal number from 0 to `max` (the most the request's field, after
// its unit is applied, can hold); strtoull alone would wrap "-2" around.
uint64_t number(const std::string& flag, const std::string& text,
                uint64_t max = std::numeric_limits<uint64_t>::max()) {
  if (text.empty() ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw UsageError{fmt::format("{} needs a number, got '{}'", flag, text)};
  errno = 0;
  const unsigned long long v = std::strtoull(text.c_str(), nullptr, 10);
  if (errno == ERANGE || v > max)
    throw UsageError{fmt::format("{} must be at most {}, got {}", flag, max, text)};
  return v;
}

constexpr uint64_t kU32 = std::numeric_limits<uint32_t>::max();

Args parseArgs(int argc, char** argv) {
  Args a;
  if (const char* env = std::getenv("SANDPOOL_CONNECT")) a.connect = env;
  if (a.connect.empty()) a.connect = "127.0.0.1:7300";
  if (const char* env = std::getenv("SANDPOOL_TOKEN")) a.token = env;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError{fmt::format("{} needs a value", arg)};
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h")
      throw UsageError{};
    else if (arg == "--connect")
      a.connect = value();
    else if (arg == "--token")
      a.token = value();
    else if (arg == "--replace")
      a.replace = true;
    else if (arg == "--timing")
      a.timing = true;
    else if (arg == "--timeout-ms")
      a.timeout_ms = static_cast<uint32_t>(number(arg, value(), kU32));
    else if (arg == "--concurrency")
      a.concurrency = static_cast<unsigned>(number(arg, value(), kU32));
    else if (arg == "--calls")
      a.calls = number(arg, value());
    else if (arg == "--warmup")
      a.warmup = number(arg, value());
    else if (arg == "--poll-us")
      a.poll = std::chrono::microseconds(number(arg, value(), kU32));
    else if (arg == "--min-warm")
      a.min_warm = static_cast<uint32_t>(number(arg, value(), kU32));
    else if (arg == "--max-vms")
      a.max_vms = static_cast<uint32_t>(number(arg, value(), kU32));
    else if (arg == "--memory-mib")
      a.memory_mib = number(arg, value(), UINT64_MAX >> 20), a.vm_settings = true;
    else if (arg == "--stack-kib")
      a.stack_kib = number(arg, value(), UINT64_MAX >> 10), a.vm_settings = true;
    else if (arg == "--input-kib")
      a.input_kib = number(arg, value(), UINT64_MAX >> 10), a.vm_settings = true;
    else if (arg == "--output-kib")
      a.output_kib = number(arg, value(), UINT64_MAX >> 10), a.vm_settings = true;
    else if (arg == "--max-host-calls")
      a.max_host_calls = static_cast<uint32_t>(number(arg, value(), kU32)), a.vm_settings = true;
    else if (arg == "--kv") {
      std::string pair = value();
      size_t eq = pair.find('=');
      if (eq == std::string::npos)
        throw UsageError{fmt::format("--kv needs KEY=VALUE, got '{}'", pair)};
      a.kv[pair.substr(0, eq)] = pair.substr(eq + 1);
    } else if (arg.rfind("--", 0) == 0) {
      throw UsageError{fmt::format("unknown option {}", arg)};
    } else {
      a.positional.push_back(arg);
    }
  }
  if (a.positional.empty()) throw UsageError{"no verb given"};
  return a;
}

// The VM options as the request's VmSettings (0 where not given).
void setVmSettings(const Args& a, rpc::VmSettings::Builder out) {
  out.setMemoryBytes(a.memory_mib << 20);
  out.setStackBytes(a.stack_kib << 10);
  out.setInputBytes(a.input_kib << 10);
  out.setOutputBytes(a.output_kib << 10);
  out.setMaxHostCalls(a.max_host_calls);
}

// One line of a guest's VM settings, as list and configure print them.
void printVmSettings(rpc::VmSettings::Reader vm) {
  std::printf(
      "  vm: memory_mib=%llu stack_kib=%llu input_kib=%llu output_kib=%llu "
      "max_host_calls=%u\n",
      static_cast<unsigned long long>(vm.getMemoryBytes() >> 20),
      static_cast<unsigned long long>(vm.getStackBytes() >> 10),
      static_cast<unsigned long long>(vm.getInputBytes() >> 10),
      static_cast<unsigned long long>(vm.getOutputBytes() >> 10), vm.getMaxHostCalls());
}

// A failure the server reported: printed, exit status 1.
struct Refused {
  std::string message;
};

// Text the server sent (names, messages, a guest's output), made safe for a
// terminal: no control characters or invalid UTF-8 reach it.
std::string shown(kj::StringPtr text) {
  return text::escapeUntrusted(std::string_view(text.begin(), text.size()), text::Escape::kLine,
                               text::kNoLimit);
}

void need(const Args& a, size_t min, size_t max, const char* usage) {
  size_t n = a.positional.size() - 1;
  if (n < min || n > max) throw UsageError{std::string("usage: sandpool ") + usage};
}

rpc::Tenant::Client login(client::Connection& conn, const Args& a, kj::WaitScope& ws) {
  if (a.token.empty()) throw UsageError{"this verb needs --token or $SANDPOOL_TOKEN"};
  auto request = conn.sandpool().loginRequest();
  request.setToken(a.token);
  auto response = request.send().wait(ws);
  if (response.getResult().isError())
    throw Refused{client::describe(response.getResult().getError())};
  return response.getResult().getTenant();
}

// The signature of GUEST's FUNCTION, from list(); empty if not exported.
std::optional<std::vector<rpc::ValueType>> paramTypes(rpc::Tenant::Client& tenant,
                                                      const std::string& guest,
                                                      const std::string& function,
                                                      kj::WaitScope& ws) {
  auto response = tenant.listRequest().send().wait(ws);
  for (auto g : response.getGuests()) {
    if (g.getName() != guest) continue;
    for (auto sig : g.getExports()) {
      if (sig.getName() != function) continue;
      std::vector<rpc::ValueType> types;
      for (rpc::ValueType t : sig.getParams()) types.push_back(t);
      return types;
    }
  }
  return std::nullopt;
}

capnp::Request<rpc::Tenant::CallParams, rpc::Tenant::CallResults> buildCall(
    rpc::Tenant::Client& tenant, const Args& a, kj::WaitScope& ws, size_t first_arg,
    kj::Maybe<rpc::HostFunctions::Client> host) {
  const std::string& guest = a.positional[first_arg];
  const std::string& function = a.positional[first_arg + 1];
  std::vector<std::string> texts(a.positional.begin() + static_cast<long>(first_arg) + 2,
                                 a.positional.end());
  auto types = paramTypes(tenant, guest, function, ws);
  auto request = tenant.callRequest();
  request.setGuest(guest);
  request.setFunction(function);
  request.setTimeoutMs(a.timeout_ms);
  auto args = request.initArgs(static_cast<unsigned>(texts.size()));
  for (size_t i = 0; i < texts.size(); ++i) {
    // Without a signature (unknown guest or function) the server reports
    // the precise error; the arguments travel as strings.
    rpc::ValueType type = types && i < types->size() ? (*types)[i] : rpc::ValueType::STRING;
    if (auto err = client::parseValue(type, texts[i], args[static_cast<unsigned>(i)])) {
      throw UsageError{fmt::format("argument {}: {}", i + 1, *err)};
    }
  }
  KJ_IF_MAYBE (h, host) {
    request.setHostFunctions(*h);
  }
  return request;
}

kj::Maybe<rpc::HostFunctions::Client> hostFunctions(const Args& a) {
  if (a.kv.empty()) return nullptr;
  return rpc::HostFunctions::Client(kj::heap<client::KvHostFunctions>(a.kv));
}

// A guest's output is its own lines: line feeds and tabs stay, every other
// control character is escaped.
void printGuestOutput(capnp::Text::Reader output) {
  std::fputs(text::escapeUntrusted(std::string_view(output.begin(), output.size()),
                                   text::Escape::kText, text::kNoLimit)
                 .c_str(),
             stdout);
}

void printTiming(rpc::Timing::Reader t) {
  std::fprintf(stderr,
               "timing: queue=%.1fus run=%.1fus reset=%.1fus total=%.1fus host_calls=%u "
               "pages_restored=%llu cold=%s\n",
               t.getQueueNs() / 1000.0, t.getRunNs() / 1000.0, t.getResetNs() / 1000.0,
               t.getTotalNs() / 1000.0, t.getHostCalls(),
               static_cast<unsigned long long>(t.getPagesRestored()),
               t.getColdStart() ? "yes" : "no");
}

void printBench(const std::string& what, const Args& a, const client::BenchResult& r) {
  auto us = [](std::chrono::nanoseconds d) { return static_cast<double>(d.count()) / 1000.0; };
  std::printf(
      "bench %s concurrency=%u calls=%llu errors=%llu p50_us=%.1f p99_us=%.1f calls_per_s=%.0f\n",
      what.c_str(), a.concurrency, static_cast<unsigned long long>(r.calls),
      static_cast<unsigned long long>(r.errors), us(r.percentile(0.50)), us(r.percentile(0.99)),
      r.callsPerSecond());
}

int run(const Args& a) {
  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  kj::Own<client::Connection> conn;
  try {
    conn = client::Connection::connect(io, a.connect).wait(ws);
  } catch (const kj::Exception& e) {
    std::fprintf(stderr, "sandpool: cannot connect to %s: %s\n", a.connect.c_str(),
                 shown(e.getDescription()).c_str());
    return 3;
  }
  const std::string& verb = a.positional[0];

  if (verb == "ping") {
    need(a, 0, 0, "ping");
    auto begin = std::chrono::steady_clock::now();
    conn->sandpool().pingRequest().send().wait(ws);
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - begin);
    std::printf("pong from %s in %lld us\n", a.connect.c_str(), static_cast<long long>(us.count()));
    return 0;
  }
  if (verb == "version") {
    need(a, 0, 0, "version");
    auto r = conn->sandpool().versionRequest().send().wait(ws);
    std::printf("%s (protocol %u; this client speaks %u)\n", shown(r.getServer()).c_str(),
                r.getProtocol(), rpc::PROTOCOL_VERSION);
    return 0;
  }
  if (verb == "bench" && a.positional.size() == 2 && a.positional[1] == "ping") {
    auto& sp = conn->sandpool();
    auto op = [&sp]() { return sp.pingRequest().send().then([](auto&&) { return true; }); };
    client::runBench(ws, op, a.concurrency, a.warmup, a.poll);
    printBench("ping", a, client::runBench(ws, op, a.concurrency, a.calls, a.poll));
    return 0;
  }

  rpc::Tenant::Client tenant = login(*conn, a, ws);
  if (verb == "info") {
    need(a, 0, 0, "info");
    auto r = tenant.infoRequest().send().wait(ws);
    auto q = r.getQuota();
    std::printf(
        "tenant %s: max_vms=%u max_guests=%u max_memory_mib=%llu max_concurrent_calls=%u "
        "queue_length=%u\n",
        shown(r.getName()).c_str(), q.getMaxVms(), q.getMaxGuests(),
        static_cast<unsigned long long>(q.getMaxMemoryBytes() >> 20), q.getMaxConcurrentCalls(),
        q.getQueueLength());
    return 0;
  }
  if (verb == "upload") {
    need(a, 2, 2, "upload NAME FILE [--replace]");
    std::ifstream in(a.positional[2], std::ios::binary);
    if (!in) throw UsageError{fmt::format("cannot read '{}'", a.positional[2])};
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto request = tenant.uploadRequest();
    request.setName(a.positional[1]);
    request.setElf(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(bytes.data()), bytes.size()));
    request.setReplace(a.replace);
    if (a.vm_settings) setVmSettings(a, request.initVmSettings());
    auto response = request.send().wait(ws);
    auto result = response.getResult();
    if (result.isError()) throw Refused{client::describe(result.getError())};
    auto guest = result.getGuest();
    std::printf("uploaded %s (%llu bytes, sha256 %s)\n", shown(guest.getName()).c_str(),
                static_cast<unsigned long long>(guest.getSize()), shown(guest.getSha256()).c_str());
    for (auto sig : guest.getExports())
      std::printf("  %s\n", shown(client::formatSignature(sig)).c_str());
    printVmSettings(guest.getVmSettings());
    return 0;
  }
  if (verb == "list") {
    need(a, 0, 0, "list");
    auto response = tenant.listRequest().send().wait(ws);
    for (auto g : response.getGuests()) {
      std::printf("%s  %llu bytes  sha256 %s  min_warm=%u max_vms=%u\n", shown(g.getName()).c_str(),
                  static_cast<unsigned long long>(g.getSize()), shown(g.getSha256()).c_str(),
                  g.getSettings().getMinWarm(), g.getSettings().getMaxVms());
      for (auto sig : g.getExports())
        std::printf("  %s\n", shown(client::formatSignature(sig)).c_str());
      printVmSettings(g.getVmSettings());
    }
    return 0;
  }
  if (verb == "remove") {
    need(a, 1, 1, "remove NAME");
    auto request = tenant.removeRequest();
    request.setName(a.positional[1]);
    auto response = request.send().wait(ws);
    if (response.hasError()) throw Refused{client::describe(response.getError())};
    std::printf("removed %s\n", a.positional[1].c_str());
    return 0;
  }
  if (verb == "call") {
    if (a.positional.size() < 3) throw UsageError{"usage: sandpool call GUEST FUNCTION [ARG...]"};
    auto response = buildCall(tenant, a, ws, 1, hostFunctions(a)).send().wait(ws);
    auto result = response.getResult();
    if (result.isError()) {
      auto e = result.getError();
      printGuestOutput(e.getOutput());
      if (a.timing) printTiming(e.getTiming());
      throw Refused{client::describe(e.getError())};
    }
    auto ok = result.getOk();
    printGuestOutput(ok.getOutput());
    if (ok.getOutputTruncated()) std::printf("[output truncated]\n");
    std::printf("%s\n", shown(client::formatValue(ok.getValue())).c_str());
    if (a.timing) printTiming(ok.getTiming());
    return 0;
  }
  if (verb == "stats") {
    need(a, 0, 0, "stats");
    // The response owns the message the readers point into: it must
    // outlive them.
    auto response = tenant.statsRequest().send().wait(ws);
    auto s = response.getStats();
    std::printf("queued=%u running=%u overloaded=%llu\n", s.getQueued(), s.getRunning(),
                static_cast<unsigned long long>(s.getOverloaded()));
    for (auto g : s.getGuests()) {
      std::printf(
          "%s warm=%u busy=%u waiting=%u created=%llu reset=%llu discarded=%llu calls=%llu "
          "failed=%llu timeouts=%llu p50_us<=%llu p99_us<=%llu\n",
          shown(g.getName()).c_str(), g.getWarm(), g.getBusy(), g.getWaiting(),
          static_cast<unsigned long long>(g.getCreated()),
          static_cast<unsigned long long>(g.getReset()),
          static_cast<unsigned long long>(g.getDiscarded()),
          static_cast<unsigned long long>(g.getCalls()),
          static_cast<unsigned long long>(g.getFailed()),
          static_cast<unsigned long long>(g.getTimeouts()),
          static_cast<unsigned long long>(g.getLatency().getP50Us()),
          static_cast<unsigned long long>(g.getLatency().getP99Us()));
    }
    return 0;
  }
  if (verb == "configure") {
    need(a, 1, 1, "configure GUEST [--min-warm N --max-vms N] [VM OPTIONS]");
    if (a.min_warm.has_value() != a.max_vms.has_value() || (!a.min_warm && !a.vm_settings))
      throw UsageError{"configure needs --min-warm and --max-vms, VM options, or both"};
    auto request = tenant.configureRequest();
    request.setGuest(a.positional[1]);
    if (a.min_warm) {
      request.getSettings().setMinWarm(*a.min_warm);
      request.getSettings().setMaxVms(*a.max_vms);
    }
    if (a.vm_settings) setVmSettings(a, request.initVmSettings());
    auto response = request.send().wait(ws);
    auto result = response.getResult();
    if (result.isError()) throw Refused{client::describe(result.getError())};
    std::printf("%s min_warm=%u max_vms=%u\n", a.positional[1].c_str(),
                result.getSettings().getMinWarm(), result.getSettings().getMaxVms());
    if (a.vm_settings) printVmSettings(result.getVmSettings());
    return 0;
  }
  if (verb == "bench") {
    if (a.positional.size() < 3)
      throw UsageError{"usage: sandpool bench ping | bench GUEST FUNCTION [ARG...]"};
    auto host = hostFunctions(a);
    auto request = buildCall(tenant, a, ws, 1, host);
    // One encoded request, re-sent for every call: the bench measures the
    // server, not argument parsing.
    auto params = request.asReader();
    // Server-side timing of every measured call, to show where time goes.
    struct ServerTimes {
      std::vector<uint64_t> queue, run, reset, total;
    } times;
    bool measuring = false;
    auto op = [&tenant, params, &times, &measuring]() {
      auto r = tenant.callRequest();
      r.setGuest(params.getGuest());
      r.setFunction(params.getFunction());
      r.setArgs(params.getArgs());
      r.setTimeoutMs(params.getTimeoutMs());
      if (params.hasHostFunctions()) r.setHostFunctions(params.getHostFunctions());
      return r.send().then(
          [&times, &measuring](capnp::Response<rpc::Tenant::CallResults>&& response) {
            auto result = response.getResult();
            if (!result.isOk()) return false;
            if (measuring) {
              auto t = result.getOk().getTiming();
              times.queue.push_back(t.getQueueNs());
              times.run.push_back(t.getRunNs());
              times.reset.push_back(t.getResetNs());
              times.total.push_back(t.getTotalNs());
            }
            return true;
          });
    };
    auto warm = client::runBench(ws, op, a.concurrency, a.warmup, a.poll);
    if (a.warmup > 0 && warm.errors == warm.calls) {
      auto response = request.send().wait(ws);
      if (response.getResult().isError())
        throw Refused{client::describe(response.getResult().getError().getError())};
    }
    measuring = true;
    printBench(a.positional[1] + "." + a.positional[2], a,
               client::runBench(ws, op, a.concurrency, a.calls, a.poll));
    std::printf("  server p50: queue_us=%.1f run_us=%.1f reset_us=%.1f total_us=%.1f\n",
                client::medianUs(times.queue), client::medianUs(times.run),
                client::medianUs(times.reset), client::medianUs(times.total));
    return 0;
  }
  throw UsageError{fmt::format("unknown verb '{}'", verb)};
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Args args = parseArgs(argc, argv);
    return run(args);
  } catch (const UsageError& e) {
    if (e.message.empty()) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::fprintf(stderr, "sandpool: %s\n\n%s", e.message.c_str(), kUsage);
    return 2;
  } catch (const Refused& e) {
    std::fprintf(stderr, "error: %s\n", shown(e.message).c_str());
    return 1;
  } catch (const kj::Exception& e) {
    std::fprintf(stderr, "sandpool: connection failed: %s\n", shown(e.getDescription()).c_str());
    return 3;
  }
}
