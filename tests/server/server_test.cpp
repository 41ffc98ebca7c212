// sandpoold end to end: a real server process on real sockets, driven by the
// C++ client library (and the CLI where the CLI is what is under test).
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <capnp/compat/json.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/debug.h>
#include <kj/encoding.h>

#include "clients/cpp/client.h"
#include "tests/server/server_process.h"

namespace sandpool {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::ChildProcess;
using testing::ServerProcess;
using testing::TempDir;

constexpr const char* kAlphaToken = "alpha-token-0123456789";
constexpr const char* kBetaToken = "beta-token-0123456789";
constexpr const char* kGammaToken = "gamma-token-0123456789";

std::vector<uint8_t> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

// The backend the servers under test use: the emulator unless the
// environment asks for another (the emulator runs everywhere).
std::string testBackend() {
  const char* env = std::getenv("SANDPOOL_TEST_BACKEND");
  return env != nullptr ? env : "emulated";
}

using Arg = std::function<void(rpc::Value::Builder)>;
Arg i32(int32_t v) {
  return [v](rpc::Value::Builder b) { b.setI32(v); };
}
Arg str(std::string v) {
  return [v](rpc::Value::Builder b) { b.setString(v); };
}
Arg bytes(size_t size) {
  return [size](rpc::Value::Builder b) { b.initBytes(static_cast<unsigned>(size)); };
}

struct CallResult {
  bool ok = false;
  std::string value;  // client::formatValue of the result
  rpc::ErrorCode code = rpc::ErrorCode::INTERNAL;
  std::string message;
  std::string output;
  bool cold_start = false;
};

// A server with three tenants: alpha with room for a few hundred calls at
// once, beta with room for two guests, gamma with one call at a time and a queue
// of two.
class ServerTest : public ::testing::Test {
 protected:
  ~ServerTest() noexcept override {}

  void startServer(std::vector<std::string> extra = {}) {
    fs::path tenants = dir_.path() / "tenants.conf";
    std::ofstream(tenants) << "# test tenants\n"
                           << "[alpha]\ntoken = " << kAlphaToken
                           << "\nmax_vms = 8\nqueue_length = 1024\n\n"
                           << "[beta]\ntoken = " << kBetaToken << "\nmax_guests = 2\n\n"
                           << "[gamma]\ntoken = " << kGammaToken
                           << "\nmax_concurrent_calls = 1\nqueue_length = 2\n";
    std::vector<std::string> args = extra;
    // Defaults for what a test does not set itself. Calls that are not about
    // their timeout get one far beyond any plausible run time on a loaded
    // machine; tests about timeouts ask for theirs per call.
    for (auto [flag, value] : {std::pair<std::string, std::string>{"--backend", testBackend()},
                               {"--workers", "2"},
                               {"--call-timeout-ms", "120000"},
                               {"--log-level", "debug"}}) {
      if (std::find(extra.begin(), extra.end(), flag) == extra.end()) {
        args.push_back(flag);
        args.push_back(value);
      }
    }
    server_.emplace(SANDPOOLD_BIN, dir_.path() / "data", tenants, args);
  }

  kj::Own<client::Connection> connect(const std::string& address = "") {
    return client::Connection::connect(io_, address.empty() ? server_->tcpAddress() : address)
        .wait(ws_);
  }

  rpc::Tenant::Client login(client::Connection& conn, const char* token) {
    return conn.login(token).wait(ws_);
  }

  rpc::Tenant::Client alpha() {
    connections_.push_back(connect());
    return login(*connections_.back(), kAlphaToken);
  }

  // Uploads `path` as `name`; returns the error, if any, as "code: message".
  std::optional<std::string> upload(rpc::Tenant::Client& tenant, const std::string& name,
                                    const std::vector<uint8_t>& elf, bool replace = false) {
    auto request = tenant.uploadRequest();
    request.setName(name);
    request.setElf(kj::arrayPtr(elf.data(), elf.size()));
    request.setReplace(replace);
    auto response = request.send().wait(ws_);
    if (response.getResult().isError()) return client::describe(response.getResult().getError());
    return std::nullopt;
  }

  // Uploads `path` as `name` with the VM settings `choose` sets; the answer.
  capnp::Response<rpc::Tenant::UploadResults> uploadWithVm(
      rpc::Tenant::Client& tenant, const std::string& name, const std::string& path,
      std::function<void(rpc::VmSettings::Builder)> choose, bool replace = false) {
    auto elf = readFile(path);
    auto request = tenant.uploadRequest();
    request.setName(name);
    request.setElf(kj::arrayPtr(elf.data(), elf.size()));
    request.setReplace(replace);
    choose(request.initVmSettings());
    return request.send().wait(ws_);
  }

  // Configures only the VM settings `choose` sets; the answer.
  capnp::Response<rpc::Tenant::ConfigureResults> configureVm(
      rpc::Tenant::Client& tenant, const std::string& name,
      std::function<void(rpc::VmSettings::Builder)> choose) {
    auto request = tenant.configureRequest();
    request.setGuest(name);
    choose(request.initVmSettings());
    return request.send().wait(ws_);
  }

  // The VM settings list() shows for guest `name`.
  rpc::VmSettings::Reader listedVm(rpc::Tenant::Client& tenant, const std::string& name) {
    listed_.emplace(tenant.listRequest().send().wait(ws_));
    for (auto g : listed_->getGuests()) {
      if (g.getName() == name) return g.getVmSettings();
    }
    ADD_FAILURE() << "no guest " << name;
    return listed_->getGuests()[0].getVmSettings();
  }

  void mustUpload(rpc::Tenant::Client& tenant, const std::string& name, const std::string& path) {
    auto error = upload(tenant, name, readFile(path));
    ASSERT_FALSE(error) << *error;
  }

  // Asks `tenant` for the Guest capability of `name`.
  capnp::Response<rpc::Tenant::GuestResults> guestOf(rpc::Tenant::Client& tenant,
                                                     const char* name) {
    auto request = tenant.guestRequest();
    request.setName(name);
    return request.send().wait(ws_);
  }

  kj::Promise<CallResult> callAsync(rpc::Tenant::Client& tenant, const std::string& guest,
                                    const std::string& function, std::vector<Arg> args,
                                    uint32_t timeout_ms = 0,
                                    kj::Maybe<rpc::HostFunctions::Client> host = nullptr) {
    auto request = tenant.callRequest();
    request.setGuest(guest);
    request.setFunction(function);
    request.setTimeoutMs(timeout_ms);
    auto list = request.initArgs(static_cast<unsigned>(args.size()));
    for (size_t i = 0; i < args.size(); ++i) args[i](list[static_cast<unsigned>(i)]);
    KJ_IF_MAYBE (h, host) {
      request.setHostFunctions(*h);
    }
    return request.send().then([](capnp::Response<rpc::Tenant::CallResults>&& response) {
      CallResult r;
      auto result = response.getResult();
      if (result.isOk()) {
        r.ok = true;
        r.value = client::formatValue(result.getOk().getValue());
        r.output = result.getOk().getOutput().cStr();
        r.cold_start = result.getOk().getTiming().getColdStart();
      } else {
        r.code = result.getError().getError().getCode();
        r.message = result.getError().getError().getMessage().cStr();
        r.output = result.getError().getOutput().cStr();
      }
      return r;
    });
  }

  CallResult call(rpc::Tenant::Client& tenant, const std::string& guest,
                  const std::string& function, std::vector<Arg> args, uint32_t timeout_ms = 0,
                  kj::Maybe<rpc::HostFunctions::Client> host = nullptr) {
    return callAsync(tenant, guest, function, std::move(args), timeout_ms, kj::mv(host)).wait(ws_);
  }

  std::vector<std::string> guestNames(rpc::Tenant::Client& tenant) {
    std::vector<std::string> names;
    auto response = tenant.listRequest().send().wait(ws_);
    for (auto g : response.getGuests()) names.push_back(g.getName().cStr());
    return names;
  }

  // Runs the CLI against this server's Unix socket with alpha's token;
  // returns its exit status and output.
  std::pair<int, std::string> runCli(std::vector<std::string> args) {
    std::vector<std::string> all = {"--connect", server_->unixAddress(), "--token", kAlphaToken};
    all.insert(all.end(), args.begin(), args.end());
    ChildProcess cli(SANDPOOL_CLI_BIN, all);
    int status = cli.wait(30s).value_or(-1);
    return {status, cli.output()};
  }

  // Polls the tenant's stats until `pred` holds for guest `name`, or the
  // deadline passes; returns whether it held.
  bool waitForStats(rpc::Tenant::Client& tenant, const std::string& name,
                    std::function<bool(rpc::GuestStats::Reader)> pred,
                    std::chrono::milliseconds deadline) {
    auto until = std::chrono::steady_clock::now() + deadline;
    auto& timer = io_.provider->getTimer();
    while (std::chrono::steady_clock::now() < until) {
      auto response = tenant.statsRequest().send().wait(ws_);
      for (auto g : response.getStats().getGuests()) {
        if (g.getName() == name && pred(g)) return true;
      }
      // Paces the polling; the condition, not this delay, is what we wait for.
      timer.afterDelay(10 * kj::MILLISECONDS).wait(ws_);
    }
    return false;
  }

  // Polls `done` (which may make RPC calls) until it holds or the deadline
  // passes; returns whether it held.
  bool waitFor(std::function<bool()> done, std::chrono::milliseconds deadline) {
    auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
      if (done()) return true;
      io_.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(ws_);
    }
    return done();
  }

  TempDir dir_;
  kj::AsyncIoContext io_ = kj::setupAsyncIo();
  kj::WaitScope& ws_ = io_.waitScope;
  std::optional<ServerProcess> server_;
  std::vector<kj::Own<client::Connection>> connections_;
  std::optional<capnp::Response<rpc::Tenant::ListResults>> listed_;
};

TEST_F(ServerTest, HelpListsEveryFlagWithItsDefault) {
  ChildProcess help(SANDPOOLD_BIN, {"--help"});
  ASSERT_EQ(help.wait(60s), 0);
  std::string text = help.output();
  for (const char* flag : {"--listen-tcp",
                           "--listen-unix",
                           "--listen-metrics",
                           "--backend",
                           "--workers",
                           "--max-mappings",
                           "--tenants",
                           "--data-dir",
                           "--min-warm",
                           "--max-vms",
                           "--idle-time-ms",
                           "--call-timeout-ms",
                           "--guest-memory-mib",
                           "--queue-length",
                           "--max-upload-kib",
                           "--rpc-message-limit-kib",
                           "--log-level",
                           "--log-format",
                           "--config",
                           "--shutdown-grace-ms",
                           "--max-connections",
                           "--worker-spin-us",
                           "--rpc-spin-us",
                           "--rpc-flow-limit-kib",
                           "--kvm-speed-check",
                           "--syscall-filter",
                           "--long-call-us",
                           "--max-long-calls",
                           "--max-long-calls-per-tenant",
                           "--guest-memory-max-mib",
                           "--guest-stack-kib",
                           "--guest-input-kib",
                           "--guest-output-kib",
                           "--guest-buffer-max-kib",
                           "--guest-host-calls",
                           "--guest-host-calls-max"}) {
    EXPECT_NE(text.find(flag), std::string::npos) << flag;
  }
  EXPECT_NE(text.find("(=127.0.0.1:7300)"), std::string::npos);
  EXPECT_NE(text.find("(=5000)"), std::string::npos);
}

TEST_F(ServerTest, ConfigFileSetsFlagsAndTheCommandLineWins) {
  fs::path config = dir_.path() / "sandpoold.conf";
  std::ofstream(config) << "# a config file\nmin-warm = 2\nmax-vms = 3\nlog-format = json\n";
  startServer({"--config", config.string(), "--max-vms", "5"});
  auto tenant = alpha();
  mustUpload(tenant, "add", GUEST_ADD);
  auto list = tenant.listRequest().send().wait(ws_);
  EXPECT_EQ(list.getGuests()[0].getSettings().getMinWarm(), 2u);
  EXPECT_EQ(list.getGuests()[0].getSettings().getMaxVms(), 5u);
  EXPECT_TRUE(waitForStats(
      tenant, "add", [](auto g) { return g.getWarm() == 2; }, 60s));
  // JSON logs: one object per line, the event inside "msg".
  auto line = server_->process().waitForLine("\"msg\":\"event=upload tenant=alpha guest=add", 60s);
  ASSERT_TRUE(line);
  EXPECT_EQ(line->front(), '{');
  EXPECT_EQ(line->back(), '}');
  EXPECT_NE(line->find("\"level\":\"info\""), std::string::npos) << *line;
}

TEST_F(ServerTest, BadFlagsAndBadTenantsFileStopTheStart) {
  ChildProcess bad_flag(SANDPOOLD_BIN, {"--tenants", "x", "--log-format", "xml"});
  EXPECT_EQ(bad_flag.wait(60s), 2);
  EXPECT_TRUE(bad_flag.sawLine("--log-format must be text or json"));

  fs::path tenants = dir_.path() / "bad-tenants.conf";
  std::ofstream(tenants) << "[alpha]\ntoken = short\n";
  ChildProcess bad_file(SANDPOOLD_BIN,
                        {"--tenants", tenants.string(), "--data-dir", (dir_.path() / "d").string(),
                         "--backend", testBackend(), "--allow-root"});
  EXPECT_EQ(bad_file.wait(60s), 1);
  EXPECT_TRUE(bad_file.sawLine(
      "tenants file line 1: tenant 'alpha' needs a token of at least 16 characters"))
      << bad_file.output();
}

TEST_F(ServerTest, UploadCallListRemove) {
  startServer();
  auto tenant = alpha();
  auto request = tenant.uploadRequest();
  auto elf = readFile(GUEST_HELLO);
  request.setName("hello");
  request.setElf(kj::arrayPtr(elf.data(), elf.size()));
  auto uploaded = request.send().wait(ws_);
  ASSERT_TRUE(uploaded.getResult().isGuest()) << client::describe(uploaded.getResult().getError());
  auto info = uploaded.getResult().getGuest();
  EXPECT_EQ(info.getSize(), elf.size());
  ASSERT_EQ(info.getExports().size(), 1u);
  EXPECT_EQ(client::formatSignature(info.getExports()[0]), "hello(string) -> string");

  CallResult r = call(tenant, "hello", "hello", {str("world")});
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.value, "\"Hello, world!\"");
  EXPECT_EQ(r.output, "hello from the guest, world!\n");
  EXPECT_FALSE(r.cold_start) << "upload answers once min-warm VMs are ready";

  EXPECT_EQ(guestNames(tenant), std::vector<std::string>{"hello"});
  auto remove = tenant.removeRequest();
  remove.setName("hello");
  auto removed = remove.send().wait(ws_);
  EXPECT_FALSE(removed.hasError());
  EXPECT_TRUE(guestNames(tenant).empty());
  r = call(tenant, "hello", "hello", {str("world")});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.code, rpc::ErrorCode::UNKNOWN_GUEST);
}

TEST_F(ServerTest, UploadReplacesOnlyWhenAsked) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "g", GUEST_HELLO);
  auto error = upload(tenant, "g", readFile(GUEST_ADD));
  ASSERT_TRUE(error);
  EXPECT_EQ(error->rfind("guestExists:", 0), 0u) << *error;
  EXPECT_EQ(call(tenant, "g", "hello", {str("old")}).value, "\"Hello, old!\"");

  error = upload(tenant, "g", readFile(GUEST_ADD), /*replace=*/true);
  ASSERT_FALSE(error) << *error;
  EXPECT_EQ(call(tenant, "g", "add", {i32(2), i32(2)}).value, "4");
  CallResult r = call(tenant, "g", "hello", {str("old")});
  EXPECT_EQ(r.code, rpc::ErrorCode::UNKNOWN_FUNCTION) << r.message;
  EXPECT_EQ(guestNames(tenant), std::vector<std::string>{"g"});
}

TEST_F(ServerTest, GuestQuotaIsEnforced) {
  startServer();
  auto conn = connect();
  auto beta = login(*conn, kBetaToken);
  mustUpload(beta, "one", GUEST_ADD);
  mustUpload(beta, "two", GUEST_ADD);
  auto error = upload(beta, "three", readFile(GUEST_ADD));
  ASSERT_TRUE(error);
  EXPECT_EQ(error->rfind("quotaExceeded:", 0), 0u) << *error;
  // Replacing an existing guest needs no new place.
  EXPECT_FALSE(upload(beta, "two", readFile(GUEST_ECHO), true));
}

TEST_F(ServerTest, UnixSocketServesTheSameApi) {
  startServer();
  auto conn = connect(server_->unixAddress());
  auto tenant = login(*conn, kAlphaToken);
  mustUpload(tenant, "add", GUEST_ADD);
  CallResult r = call(tenant, "add", "add", {i32(40), i32(2)});
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.value, "42");
}

TEST_F(ServerTest, ThirtyTwoConcurrentClientsGetTheirOwnResults) {
  startServer();
  auto first = alpha();
  mustUpload(first, "add", GUEST_ADD);
  constexpr int kClients = 32, kCallsEach = 10;
  std::vector<kj::Own<client::Connection>> conns;
  std::vector<rpc::Tenant::Client> tenants;
  for (int i = 0; i < kClients; ++i) {
    conns.push_back(connect(i % 2 == 0 ? server_->tcpAddress() : server_->unixAddress()));
    tenants.push_back(login(*conns.back(), kAlphaToken));
  }
  kj::Vector<kj::Promise<CallResult>> calls;
  std::vector<std::string> expected;
  for (int round = 0; round < kCallsEach; ++round) {
    for (int i = 0; i < kClients; ++i) {
      calls.add(
          callAsync(tenants[static_cast<size_t>(i)], "add", "add", {i32(i * 1000), i32(round)}));
      expected.push_back(std::to_string(i * 1000 + round));
    }
  }
  auto results = kj::joinPromises(calls.releaseAsArray()).wait(ws_);
  ASSERT_EQ(results.size(), expected.size());
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].ok) << results[i].message;
    EXPECT_EQ(results[i].value, expected[i]);
  }
}

// The load driver behind `sandpool bench` and the end-to-end benchmark:
// whether it polls for replies or sleeps between them, every call it
// starts is answered, counted and timed once.
TEST_F(ServerTest, BenchDriverCompletesEveryCallWhetherPollingOrSleeping) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "add", GUEST_ADD);
  constexpr uint64_t kCalls = 300;
  for (auto poll : {std::chrono::microseconds(0), client::kDefaultBenchPoll}) {
    for (unsigned concurrency : {1u, 16u}) {
      int32_t next = 0;
      uint64_t right = 0;
      auto op = [&]() {
        int32_t n = next++;
        return callAsync(tenant, "add", "add", {i32(n), i32(1)}).then([&right, n](CallResult r) {
          if (r.ok && r.value == std::to_string(n + 1)) ++right;
          return r.ok;
        });
      };
      client::BenchResult result = client::runBench(ws_, op, concurrency, kCalls, poll);
      SCOPED_TRACE("poll " + std::to_string(poll.count()) + " us, concurrency " +
                   std::to_string(concurrency));
      EXPECT_EQ(result.calls, kCalls);
      EXPECT_EQ(result.errors, 0u);
      EXPECT_EQ(right, kCalls);
      EXPECT_EQ(next, static_cast<int32_t>(kCalls)) << "no call started past the count";
      EXPECT_EQ(result.latencies.size(), kCalls);
      EXPECT_GT(result.callsPerSecond(), 0);
    }
  }
  // Refused calls count as errors; a call that fails in the client ends
  // the run with its exception instead of leaving the driver waiting.
  auto unknown = [&]() {
    return callAsync(tenant, "add", "nope", {}).then([](CallResult r) { return r.ok; });
  };
  EXPECT_EQ(client::runBench(ws_, unknown, 16, 50).errors, 50u);
  int started = 0;
  auto broken = [&]() -> kj::Promise<bool> {
    if (++started == 20) return KJ_EXCEPTION(FAILED, "the client lost its connection");
    return callAsync(tenant, "add", "add", {i32(1), i32(1)}).then([](CallResult r) {
      return r.ok;
    });
  };
  EXPECT_THROW(client::runBench(ws_, broken, 16, 1000), kj::Exception);
}

TEST_F(ServerTest, TenantsCannotSeeCallOrRemoveEachOthersGuests) {
  startServer();
  auto a = alpha();
  auto conn_b = connect();
  auto b = login(*conn_b, kBetaToken);
  mustUpload(a, "secret", GUEST_HELLO);

  EXPECT_TRUE(guestNames(b).empty());
  CallResult r = call(b, "secret", "hello", {str("x")});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.code, rpc::ErrorCode::UNKNOWN_GUEST);
  auto remove = b.removeRequest();
  remove.setName("secret");
  auto removed = remove.send().wait(ws_);
  ASSERT_TRUE(removed.hasError());
  EXPECT_EQ(removed.getError().getCode(), rpc::ErrorCode::UNKNOWN_GUEST);
  auto stats = b.statsRequest().send().wait(ws_);
  EXPECT_EQ(stats.getStats().getGuests().size(), 0u);

  // The same name in another tenant is another guest.
  mustUpload(b, "secret", GUEST_ADD);
  EXPECT_EQ(call(b, "secret", "add", {i32(1), i32(2)}).value, "3");
  r = call(a, "secret", "hello", {str("A")});
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.value, "\"Hello, A!\"");
}

TEST_F(ServerTest, GuestCapabilityCallsItsGuestAndFollowsTheName) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "calc", GUEST_ADD);
  auto got = guestOf(tenant, "calc");
  ASSERT_TRUE(got.getResult().isGuest());
  rpc::Guest::Client guest = got.getResult().getGuest();

  auto call = [&](const char* function, int32_t a, int32_t b) {
    auto r = guest.callRequest();
    r.setFunction(function);
    auto args = r.initArgs(2);
    args[0].setI32(a);
    args[1].setI32(b);
    return r.send().wait(ws_);
  };
  auto ok = call("add", 40, 2);
  ASSERT_TRUE(ok.getResult().isOk());
  EXPECT_EQ(ok.getResult().getOk().getValue().getI32(), 42);
  auto info = guest.infoRequest().send().wait(ws_);
  ASSERT_TRUE(info.getResult().isInfo());
  EXPECT_EQ(info.getResult().getInfo().getName(), "calc");

  auto remove = tenant.removeRequest();
  remove.setName("calc");
  remove.send().wait(ws_);
  auto gone = call("add", 1, 1);
  ASSERT_TRUE(gone.getResult().isError());
  EXPECT_EQ(gone.getResult().getError().getError().getCode(), rpc::ErrorCode::UNKNOWN_GUEST);

  auto refused = guestOf(tenant, "nothing");
  ASSERT_TRUE(refused.getResult().isError());
  EXPECT_EQ(refused.getResult().getError().getCode(), rpc::ErrorCode::UNKNOWN_GUEST);
}

TEST_F(ServerTest, SighupRotatesTokensAndRevokesOldCapabilities) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "add", GUEST_ADD);
  rpc::Guest::Client handle = guestOf(tenant, "add").getResult().getGuest();

  // alpha gets a new token, beta leaves, delta arrives.
  std::ofstream(dir_.path() / "tenants.conf")
      << "[alpha]\ntoken = alpha-rotated-token-000001\nmax_vms = 8\n"
         "queue_length = 1024\n\n"
      << "[gamma]\ntoken = " << kGammaToken << "\nmax_concurrent_calls = 1\nqueue_length = 2\n\n"
      << "[delta]\ntoken = delta-token-0123456789\n";
  server_->process().signal(SIGHUP);
  ASSERT_TRUE(server_->process().waitForLine("event=tenants_reloaded", 60s));
  EXPECT_TRUE(server_->process().sawLine("event=token_rotated tenant=alpha"));

  auto expectRevoked = [&](auto promise) {
    kj::Maybe<kj::Exception> failure = kj::runCatchingExceptions([&] { promise.wait(ws_); });
    KJ_IF_MAYBE (e, failure) {
      EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED);
      EXPECT_NE(std::string(e->getDescription().cStr()).find("revoked"), std::string::npos)
          << e->getDescription().cStr();
    } else {
      ADD_FAILURE() << "a capability issued under the old token still works";
    }
  };
  expectRevoked(tenant.listRequest().send());
  expectRevoked(handle.infoRequest().send());

  auto conn = connect();
  for (const char* old_token : {kAlphaToken, kBetaToken}) {
    auto request = conn->sandpool().loginRequest();
    request.setToken(old_token);
    auto refused = request.send().wait(ws_);
    ASSERT_TRUE(refused.getResult().isError()) << old_token;
    EXPECT_EQ(refused.getResult().getError().getCode(), rpc::ErrorCode::UNAUTHENTICATED);
  }
  auto rotated = login(*conn, "alpha-rotated-token-000001");
  EXPECT_EQ(call(rotated, "add", "add", {i32(1), i32(2)}).value, "3")
      << "the tenant keeps its guests";
  auto delta = login(*conn, "delta-token-0123456789");
  EXPECT_TRUE(guestNames(delta).empty());
  mustUpload(delta, "add", GUEST_ADD);
  EXPECT_EQ(call(delta, "add", "add", {i32(2), i32(2)}).value, "4");
}

TEST_F(ServerTest, UnknownTokenIsRefused) {
  startServer();
  auto conn = connect();
  for (const char* token : {"", "alpha-token-012345678", "not-a-token-at-all-at-all"}) {
    auto request = conn->sandpool().loginRequest();
    request.setToken(token);
    auto response = request.send().wait(ws_);
    ASSERT_TRUE(response.getResult().isError()) << token;
    EXPECT_EQ(response.getResult().getError().getCode(), rpc::ErrorCode::UNAUTHENTICATED);
  }
  EXPECT_TRUE(server_->process().waitForLine("event=login_refused", 60s));
}

TEST_F(ServerTest, MalformedUploadsAreRefusedAndNothingIsStored) {
  startServer();
  auto tenant = alpha();
  std::vector<uint8_t> garbage(4096);
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<uint8_t>(i * 31 + 7);
  auto error = upload(tenant, "garbage", garbage);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->rfind("invalidGuest:", 0), 0u) << *error;

  auto truncated = readFile(GUEST_HELLO);
  truncated.resize(200);
  error = upload(tenant, "truncated", truncated);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->rfind("invalidGuest:", 0), 0u) << *error;

  error = upload(tenant, "../escape", readFile(GUEST_HELLO));
  ASSERT_TRUE(error);
  EXPECT_EQ(error->rfind("invalidArgument:", 0), 0u) << *error;

  EXPECT_TRUE(guestNames(tenant).empty());
  EXPECT_FALSE(fs::exists(dir_.path() / "data" / "guests" / "alpha" / "garbage.guest"));
  EXPECT_FALSE(fs::exists(dir_.path() / "data" / "guests" / "escape.guest"));
}

TEST_F(ServerTest, OversizedUploadIsRefusedAndOversizedMessageDisconnects) {
  startServer({"--max-upload-kib", "1024", "--rpc-message-limit-kib", "4096"});
  auto tenant = alpha();
  auto big = readFile(GUEST_HELLO);
  big.resize(2 << 20);
  auto error = upload(tenant, "big", big);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->rfind("tooLarge:", 0), 0u) << *error;

  // Past the RPC message limit the server does not even read the call: it
  // drops the connection, and serves everyone else on.
  std::vector<uint8_t> huge(6 << 20, 0x90);
  auto request = tenant.uploadRequest();
  request.setName("huge");
  request.setElf(kj::arrayPtr(huge.data(), huge.size()));
  kj::Maybe<kj::Exception> failure = kj::runCatchingExceptions([&] { request.send().wait(ws_); });
  KJ_IF_MAYBE (e, failure) {
    EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED) << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "an upload past the RPC message limit was answered";
  }
  auto fresh = alpha();
  mustUpload(fresh, "add", GUEST_ADD);
  EXPECT_EQ(call(fresh, "add", "add", {i32(2), i32(3)}).value, "5");
}

TEST_F(ServerTest, GarbageOnTheWireDropsOnlyThatConnection) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "add", GUEST_ADD);
  auto raw =
      io_.provider->getNetwork().parseAddress(server_->tcpAddress()).wait(ws_)->connect().wait(ws_);
  std::vector<uint8_t> garbage(256);
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<uint8_t>(0xff - i);
  raw->write(garbage.data(), garbage.size()).wait(ws_);
  // The server closes the connection it cannot parse (after an RPC abort
  // message, which is all it sends) ...
  char buf[4096];
  size_t total = 0, n;
  while ((n = io_.provider->getTimer()
                  .timeoutAfter(10 * kj::SECONDS, raw->tryRead(buf, 1, sizeof buf))
                  .wait(ws_)) > 0) {
    total += n;
  }
  EXPECT_LT(total, sizeof buf);
  EXPECT_TRUE(server_->process().waitForLine("event=disconnect", 60s));
  // ... and everyone else is served as before.
  EXPECT_EQ(call(tenant, "add", "add", {i32(20), i32(22)}).value, "42");
}

TEST_F(ServerTest, ConnectionsBeyondTheLimitAreClosed) {
  startServer({"--max-connections", "2"});
  auto first = connect();
  auto second = connect(server_->unixAddress());
  // Logged in: at the limit the server makes room only by closing a
  // connection that has not (tests/server/connection_limits_test.cpp).
  login(*first, kAlphaToken);
  login(*second, kAlphaToken);
  auto third = connect();
  kj::Maybe<kj::Exception> failure =
      kj::runCatchingExceptions([&] { third->sandpool().pingRequest().send().wait(ws_); });
  KJ_IF_MAYBE (e, failure) {
    EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED) << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "a third connection was served";
  }
  EXPECT_TRUE(server_->process().waitForLine("event=connection_refused", 60s));
  // A place that frees up can be taken again.
  first = nullptr;
  ASSERT_TRUE(server_->process().waitForLine("event=disconnect", 60s));
  auto fourth = connect();
  fourth->sandpool().pingRequest().send().wait(ws_);
}

TEST_F(ServerTest, SecondServerDoesNotTakeOverALiveUnixSocket) {
  startServer();
  ChildProcess second(SANDPOOLD_BIN,
                      {"--tenants", (dir_.path() / "tenants.conf").string(), "--data-dir",
                       (dir_.path() / "data").string(), "--listen-tcp", "127.0.0.1:0",
                       "--listen-unix", (dir_.path() / "data" / "sandpoold.sock").string(),
                       "--backend", testBackend(), "--allow-root"});
  EXPECT_EQ(second.wait(20s), 1);
  EXPECT_TRUE(second.sawLine("another process is serving on the Unix socket")) << second.output();
  auto conn = connect(server_->unixAddress());
  auto tenant = login(*conn, kAlphaToken);
  EXPECT_TRUE(guestNames(tenant).empty());
}

TEST_F(ServerTest, UnknownFunctionAndWrongArgumentsAreTypedErrors) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "add", GUEST_ADD);
  CallResult r = call(tenant, "add", "subtract", {i32(1), i32(2)});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.code, rpc::ErrorCode::UNKNOWN_FUNCTION) << r.message;

  r = call(tenant, "add", "add", {str("1"), str("2")});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.code, rpc::ErrorCode::BAD_ARGUMENTS) << r.message;

  r = call(tenant, "add", "add", {i32(1)});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.code, rpc::ErrorCode::BAD_ARGUMENTS) << r.message;

  // The VM that refused those calls serves the next one.
  EXPECT_EQ(call(tenant, "add", "add", {i32(1), i32(2)}).value, "3");
}

TEST_F(ServerTest, GuestFaultIsTypedAndThePoolServesOn) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "misbehave", GUEST_MISBEHAVE);
  CallResult r = call(tenant, "misbehave", "write_null", {});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.code, rpc::ErrorCode::GUEST_FAULT) << r.message;
  r = call(tenant, "misbehave", "divide", {i32(84), i32(2)});
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.value, "42");
}

TEST_F(ServerTest, RunawayGuestTimesOutWhileOtherCallsAreServed) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "misbehave", GUEST_MISBEHAVE);
  mustUpload(tenant, "add", GUEST_ADD);
  bool spin_done = false;
  // 3 s leaves the 50 calls below ample time on a loaded machine.
  auto spin = callAsync(tenant, "misbehave", "spin", {}, 3000).then([&](CallResult r) {
    spin_done = true;
    return r;
  });
  ASSERT_TRUE(waitForStats(
      tenant, "misbehave", [](auto g) { return g.getBusy() == 1; }, 60s));
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 50; ++i) {
    CallResult r = call(tenant, "add", "add", {i32(i), i32(1)});
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.value, std::to_string(i + 1));
  }
  EXPECT_FALSE(spin_done) << "the other calls should not have waited for the runaway guest";
  CallResult r = spin.wait(ws_);
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.code, rpc::ErrorCode::TIMEOUT) << r.message;
  // Its own 3 s timeout stopped it, not the server's 120 s one.
  EXPECT_LT(elapsed, 60s);
  auto stats = tenant.statsRequest().send().wait(ws_);
  for (auto g : stats.getStats().getGuests()) {
    if (g.getName() == "misbehave") {
      EXPECT_EQ(g.getTimeouts(), 1u);
    }
  }
}

TEST_F(ServerTest, FullQueueRefusesCallsAsOverloaded) {
  startServer();
  auto conn = connect();
  auto gamma = login(*conn, kGammaToken);
  mustUpload(gamma, "misbehave", GUEST_MISBEHAVE);
  // gamma runs one call at a time and queues two: of eight spinning calls
  // sent together, at least five find the queue full (the first spins for 2 s,
  // far longer than the eight take to arrive on a loaded machine).
  kj::Vector<kj::Promise<CallResult>> calls;
  for (int i = 0; i < 8; ++i) calls.add(callAsync(gamma, "misbehave", "spin", {}, 2000));
  auto results = kj::joinPromises(calls.releaseAsArray()).wait(ws_);
  int overloaded = 0;
  for (auto& r : results) {
    EXPECT_FALSE(r.ok);
    if (r.code == rpc::ErrorCode::OVERLOADED) {
      ++overloaded;
    } else {
      EXPECT_EQ(r.code, rpc::ErrorCode::TIMEOUT) << r.message;
    }
  }
  EXPECT_GE(overloaded, 5);
  EXPECT_LE(overloaded, 6);
  auto stats = gamma.statsRequest().send().wait(ws_);
  EXPECT_EQ(stats.getStats().getOverloaded(), static_cast<uint64_t>(overloaded));
}

// Answers every host call with "released", once the test releases them:
// calls held inside the host for exactly as long as a test needs.
class ReleasedHostFunctions final : public rpc::HostFunctions::Server {
 public:
  explicit ReleasedHostFunctions(kj::ForkedPromise<void>& released) : released_(released) {}

 protected:
  kj::Promise<void> call(CallContext context) override {
    return released_.addBranch().then([context]() mutable {
      context.getResults().initResult().initValue().setString("released");
    });
  }

 private:
  kj::ForkedPromise<void>& released_;
};

// A caller that cancels a call still waiting in its tenant's queue: the
// call is dropped, never run (docs/rpc.md, "Cancellation"). gamma runs one
// call at a time: the first is held in the host until the second has been
// queued and cancelled.
TEST_F(ServerTest, AQueuedCallWhoseCallerCancelsItNeverRuns) {
  startServer();
  auto conn = connect();
  auto gamma = login(*conn, kGammaToken);
  mustUpload(gamma, "probe", GUEST_PROBE);
  auto release = kj::newPromiseAndFulfiller<void>();
  kj::ForkedPromise<void> released = release.promise.fork();
  rpc::HostFunctions::Client host = kj::heap<ReleasedHostFunctions>(released);
  auto held = callAsync(gamma, "probe", "call_host", {str("hold"), str("")}, 0, host);
  ASSERT_TRUE(waitForStats(
      gamma, "probe", [](auto g) { return g.getBusy() == 1; }, 60s));

  auto other_conn = connect();
  auto other = login(*other_conn, kGammaToken);
  {
    auto queued = callAsync(other, "probe", "heap_bytes", {});
    ASSERT_TRUE(waitFor(
        [&] { return gamma.statsRequest().send().wait(ws_).getStats().getQueued() == 1; }, 60s));
  }  // dropped: the client sends the cancellation
  // Messages on a connection are handled in order: once this answers, the
  // server has seen the cancellation.
  other.statsRequest().send().wait(ws_);
  release.fulfiller->fulfill();
  CallResult r = held.wait(ws_);
  EXPECT_EQ(r.value, "\"released\"") << r.message;
  EXPECT_TRUE(server_->process().waitForLine(
      "event=call_cancelled tenant=gamma guest=probe function=\"heap_bytes\" ran=false", 60s))
      << server_->process().output();
  CallResult after = call(gamma, "probe", "heap_bytes", {});
  EXPECT_TRUE(after.ok) << after.message;
}

// A running call whose caller goes away is stopped and its VM reset and
// kept: gamma runs one call at a time, so the next call can run only once
// the spinning one (a 100 s timeout) has ended.
TEST_F(ServerTest, ARunningCallWhoseCallerGoesAwayFreesItsVmForTheNext) {
  startServer();
  auto conn = connect();
  auto gamma = login(*conn, kGammaToken);
  mustUpload(gamma, "misbehave", GUEST_MISBEHAVE);
  {
    auto other_conn = connect();
    auto other = login(*other_conn, kGammaToken);
    auto spinning = callAsync(other, "misbehave", "spin", {}, 100000);
    ASSERT_TRUE(waitForStats(
        gamma, "misbehave", [](auto g) { return g.getBusy() == 1; }, 60s));
  }  // the caller's connection goes away
  CallResult next = call(gamma, "misbehave", "divide", {i32(8), i32(2)});
  ASSERT_TRUE(next.ok) << next.message;
  EXPECT_EQ(next.value, "4");
  EXPECT_TRUE(server_->process().waitForLine(
      "event=call_cancelled tenant=gamma guest=misbehave function=\"spin\" ran=true", 60s))
      << server_->process().output();
  // The stopped call's VM was reset and kept: none discarded.
  EXPECT_TRUE(waitForStats(
      gamma, "misbehave", [](auto g) { return g.getBusy() == 0 && g.getDiscarded() == 0; }, 60s));
}

TEST_F(ServerTest, PoolScalesUpUnderLoadAndToZeroWhenIdle) {
  // The idle time is what is tested, and also what must not pass before the
  // test has seen the warm VM: 2 s, against a 10 ms stats poll.
  startServer({"--workers", "4", "--idle-time-ms", "2000", "--min-warm", "1", "--max-vms", "4"});
  auto tenant = alpha();
  mustUpload(tenant, "probe", GUEST_PROBE);
  ASSERT_TRUE(waitForStats(
      tenant, "probe", [](auto g) { return g.getWarm() == 1; }, 60s));

  // Four calls held in the host until the stats have shown all four busy at
  // once, whatever the machine's pace.
  auto release = kj::newPromiseAndFulfiller<void>();
  kj::ForkedPromise<void> released = release.promise.fork();
  rpc::HostFunctions::Client host = kj::heap<ReleasedHostFunctions>(released);
  kj::Vector<kj::Promise<CallResult>> calls;
  for (int i = 0; i < 4; ++i)
    calls.add(callAsync(tenant, "probe", "call_host", {str("hold"), str("")}, 0, host));
  ASSERT_TRUE(waitForStats(
      tenant, "probe", [](auto g) { return g.getBusy() == 4; }, 60s))
      << "four concurrent calls should run on four VMs";
  release.fulfiller->fulfill();
  auto results = kj::joinPromises(calls.releaseAsArray()).wait(ws_);
  for (auto& r : results) EXPECT_EQ(r.value, "\"released\"") << r.message;
  auto stats = tenant.statsRequest().send().wait(ws_);
  EXPECT_EQ(stats.getStats().getGuests()[0].getCreated(), 4u);

  ASSERT_TRUE(waitForStats(
      tenant, "probe", [](auto g) { return g.getWarm() == 0 && g.getBusy() == 0; }, 60s))
      << "idle VMs should be dropped after the idle time";
  EXPECT_TRUE(server_->process().waitForLine("event=scale_to_zero tenant=alpha guest=probe", 60s));

  CallResult r = call(tenant, "probe", "heap_bytes", {});
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_TRUE(r.cold_start);
}

TEST_F(ServerTest, VmLimitMakesCallsWaitForAFreeVm) {
  startServer({"--workers", "4", "--max-vms", "1"});
  auto tenant = alpha();
  mustUpload(tenant, "add", GUEST_ADD);
  kj::Vector<kj::Promise<CallResult>> calls;
  for (int i = 0; i < 64; ++i) calls.add(callAsync(tenant, "add", "add", {i32(i), i32(i)}));
  auto results = kj::joinPromises(calls.releaseAsArray()).wait(ws_);
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].ok) << results[i].message;
    EXPECT_EQ(results[i].value, std::to_string(2 * i));
  }
  auto stats = tenant.statsRequest().send().wait(ws_);
  EXPECT_EQ(stats.getStats().getGuests()[0].getCreated(), 1u);
  EXPECT_EQ(stats.getStats().getGuests()[0].getCalls(), 64u);
}

TEST_F(ServerTest, ConfigureStaysWithinTheQuota) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "add", GUEST_ADD);
  auto request = tenant.configureRequest();
  request.setGuest("add");
  request.getSettings().setMinWarm(2);
  request.getSettings().setMaxVms(3);
  auto response = request.send().wait(ws_);
  auto result = response.getResult();
  ASSERT_TRUE(result.isSettings());
  EXPECT_TRUE(waitForStats(
      tenant, "add", [](auto g) { return g.getWarm() == 2; }, 60s));

  auto over = tenant.configureRequest();
  over.setGuest("add");
  over.getSettings().setMinWarm(1);
  over.getSettings().setMaxVms(9);  // alpha's quota is 8 VMs
  auto refused_response = over.send().wait(ws_);
  auto refused = refused_response.getResult();
  ASSERT_TRUE(refused.isError());
  EXPECT_EQ(refused.getError().getCode(), rpc::ErrorCode::QUOTA_EXCEEDED);
}

TEST_F(ServerTest, RestartKeepsAcceptedGuests) {
  startServer();
  std::string sha;
  {
    auto tenant = alpha();
    mustUpload(tenant, "hello", GUEST_HELLO);
    auto list = tenant.listRequest().send().wait(ws_);
    sha = list.getGuests()[0].getSha256().cStr();
    auto configure = tenant.configureRequest();
    configure.setGuest("hello");
    configure.getSettings().setMinWarm(2);
    configure.getSettings().setMaxVms(3);
    ASSERT_TRUE(configure.send().wait(ws_).getResult().isSettings());
  }
  connections_.clear();
  ASSERT_EQ(server_->stop(), 0);
  server_.reset();

  startServer();
  auto tenant = alpha();
  auto list = tenant.listRequest().send().wait(ws_);
  ASSERT_EQ(list.getGuests().size(), 1u);
  EXPECT_EQ(list.getGuests()[0].getSettings().getMinWarm(), 2u)
      << "configure() settings survive a restart";
  EXPECT_EQ(list.getGuests()[0].getSettings().getMaxVms(), 3u);
  auto stats = tenant.statsRequest().send().wait(ws_);
  EXPECT_EQ(stats.getStats().getGuests()[0].getWarm(), 2u)
      << "reloaded guests are warm before the server is ready";
  EXPECT_EQ(list.getGuests()[0].getName(), "hello");
  EXPECT_EQ(list.getGuests()[0].getSha256(), sha);
  CallResult r = call(tenant, "hello", "hello", {str("again")});
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.value, "\"Hello, again!\"");
}

// The process's memory mappings in /proc/PID/maps.
uint64_t mappingsOf(pid_t pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  return static_cast<uint64_t>(std::count(std::istreambuf_iterator<char>(maps),
                                          std::istreambuf_iterator<char>(), '\n'));
}

TEST_F(ServerTest, VmsPastTheMappingLimitAreRefusedAsOverloadedAndTheServerServesOn) {
  // Six guests stored, no VM: the mappings the server holds before any VM.
  constexpr int kGuests = 6;
  startServer({"--min-warm", "0"});
  {
    auto tenant = alpha();
    for (int i = 0; i < kGuests; ++i) mustUpload(tenant, fmt::format("h{}", i), GUEST_HELLO);
  }
  const uint64_t without_vms = mappingsOf(server_->process().pid());
  connections_.clear();
  ASSERT_EQ(server_->stop(), 0);
  server_.reset();

  // Room above the margin for one VM's reserve (64 mappings, vm/host_limits.h)
  // and 40 more: each VM made holds 11 to 16, so after the third at most the
  // count finds less than a reserve left and refuses the rest.
  const uint64_t wanted_room = 64 + 40;
  uint64_t cap = without_vms + 256 + wanted_room;
  if (cap / 16 > 256) cap = (without_vms + wanted_room) * 16 / 15 + 1;
  startServer({"--min-warm", "0", "--max-mappings", std::to_string(cap)});
  auto tenant = alpha();
  std::vector<int> served;
  int overloaded = 0;
  for (int i = 0; i < kGuests; ++i) {
    CallResult r = call(tenant, fmt::format("h{}", i), "hello", {str("you")});
    if (r.ok) {
      served.push_back(i);
    } else {
      EXPECT_EQ(r.code, rpc::ErrorCode::OVERLOADED) << r.message;
      EXPECT_NE(r.message.find("vm.max_map_count"), std::string::npos) << r.message;
      ++overloaded;
    }
  }
  EXPECT_GE(overloaded, 1) << "mappings before VMs: " << without_vms << ", cap " << cap;
  EXPECT_TRUE(server_->process().waitForLine("event=host_limit limit=vm.max_map_count", 60s));
  // The VMs made before the limit still serve, and so does the rest of the API.
  ASSERT_FALSE(served.empty()) << "mappings before VMs: " << without_vms << ", cap " << cap;
  for (int i : served) {
    CallResult again = call(tenant, fmt::format("h{}", i), "hello", {str("again")});
    ASSERT_TRUE(again.ok) << again.message;
    EXPECT_EQ(again.value, "\"Hello, again!\"");
  }
  EXPECT_EQ(guestNames(tenant).size(), static_cast<size_t>(kGuests));
}

TEST_F(ServerTest, KillNineLosesNoAcknowledgedUpload) {
  startServer();
  {
    auto tenant = alpha();
    mustUpload(tenant, "echo", GUEST_ECHO);
  }
  connections_.clear();
  server_->process().signal(SIGKILL);
  ASSERT_EQ(server_->process().wait(60s), 128 + SIGKILL);
  server_.reset();

  startServer();
  auto tenant = alpha();
  CallResult r = call(tenant, "echo", "echo", {str("still here")});
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.value, "\"still here\"");
}

TEST_F(ServerTest, CorruptedStoredGuestIsRefusedAtStart) {
  startServer();
  {
    auto tenant = alpha();
    mustUpload(tenant, "hello", GUEST_HELLO);
    mustUpload(tenant, "add", GUEST_ADD);
  }
  connections_.clear();
  ASSERT_EQ(server_->stop(), 0);
  server_.reset();
  fs::path stored = dir_.path() / "data" / "guests" / "alpha" / "hello.guest";
  ASSERT_TRUE(fs::exists(stored));
  {
    std::fstream f(stored, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1000);
    f.put('\x5a');
  }
  startServer();
  EXPECT_TRUE(server_->process().sawLine(
      "event=reload_refused guest 'hello' of tenant 'alpha': stored file is corrupted"));
  auto tenant = alpha();
  EXPECT_EQ(guestNames(tenant), std::vector<std::string>{"add"});
}

TEST_F(ServerTest, SigintStopsTheServerCleanly) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "add", GUEST_ADD);
  EXPECT_EQ(call(tenant, "add", "add", {i32(1), i32(1)}).value, "2");
  server_->process().signal(SIGINT);
  EXPECT_EQ(server_->process().wait(20s), 0);
  EXPECT_TRUE(server_->process().sawLine("event=shutdown_done exit_code=0"));
}

TEST_F(ServerTest, SigtermFinishesInFlightCallsAndExitsZero) {
  // The spinning call must still be in flight when the late call arrives:
  // 5 s of it, within a grace period that outlasts it.
  startServer({"--shutdown-grace-ms", "60000"});
  auto tenant = alpha();
  mustUpload(tenant, "misbehave", GUEST_MISBEHAVE);
  mustUpload(tenant, "add", GUEST_ADD);
  auto spin = callAsync(tenant, "misbehave", "spin", {}, 5000);
  ASSERT_TRUE(waitForStats(
      tenant, "misbehave", [](auto g) { return g.getBusy() == 1; }, 60s));
  server_->process().signal(SIGTERM);
  ASSERT_TRUE(server_->process().waitForLine("event=shutdown_begin", 60s));

  // Calls arriving now are refused; the one in flight gets its real answer.
  CallResult late = call(tenant, "add", "add", {i32(1), i32(1)});
  EXPECT_FALSE(late.ok);
  EXPECT_EQ(late.code, rpc::ErrorCode::SHUTTING_DOWN) << late.message;
  CallResult r = spin.wait(ws_);
  EXPECT_EQ(r.code, rpc::ErrorCode::TIMEOUT) << r.message;

  EXPECT_EQ(server_->process().wait(20s), 0);
  EXPECT_TRUE(server_->process().sawLine("event=shutdown_drained clean=true"));
  EXPECT_FALSE(fs::exists(dir_.path() / "data" / "sandpoold.sock"));
}

// Host functions lent by the client for one call.

// A host function provider that never answers: the call's timeout must
// still end the call, and the server must stay responsive meanwhile.
// Never answers; fulfils `cancelled` when the server gives up on the call.
class SilentHostFunctions final : public rpc::HostFunctions::Server {
 public:
  explicit SilentHostFunctions(kj::Own<kj::PromiseFulfiller<void>> cancelled)
      : cancelled_(kj::mv(cancelled)) {}

 protected:
  kj::Promise<void> call(CallContext context) override {
    context.allowCancellation();
    return kj::Promise<void>(kj::NEVER_DONE).attach(kj::defer([this] { cancelled_->fulfill(); }));
  }

 private:
  kj::Own<kj::PromiseFulfiller<void>> cancelled_;
};

TEST_F(ServerTest, GuestCallsHostFunctionServedByTheClient) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "probe", GUEST_PROBE);
  auto kv =
      kj::heap<client::KvHostFunctions>(std::map<std::string, std::string>{{"color", "blue"}});
  client::KvHostFunctions& kv_ref = *kv;
  rpc::HostFunctions::Client host = kj::mv(kv);

  CallResult r = call(tenant, "probe", "call_host", {str("kv_get"), str("color")}, 0, host);
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.value, "\"blue\"");
  EXPECT_EQ(kv_ref.callCount(), 1u);

  // An error from the callback reaches the guest as a failed host call; the
  // probe guest turns it into its own failure.
  r = call(tenant, "probe", "call_host", {str("kv_get"), str("shape")}, 0, host);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.code, rpc::ErrorCode::GUEST_ABORT) << r.message;
  EXPECT_NE(r.message.find("no key 'shape'"), std::string::npos) << r.message;
}

// A host function provider whose method throws.
class ThrowingHostFunctions final : public rpc::HostFunctions::Server {
 protected:
  kj::Promise<void> call(CallContext) override { KJ_FAIL_REQUIRE("the lookup service is down"); }
};

TEST_F(ServerTest, ExceptionInTheClientsHostFunctionFailsTheHostCall) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "probe", GUEST_PROBE);
  rpc::HostFunctions::Client throwing = kj::heap<ThrowingHostFunctions>();
  CallResult r = call(tenant, "probe", "call_host", {str("kv_get"), str("color")}, 0, throwing);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.code, rpc::ErrorCode::GUEST_ABORT) << r.message;
  EXPECT_NE(r.message.find("the lookup service is down"), std::string::npos) << r.message;
  // The VM that saw the failed host call serves the next call normally.
  auto kv = kj::heap<client::KvHostFunctions>(std::map<std::string, std::string>{{"color", "red"}});
  r = call(tenant, "probe", "call_host", {str("kv_get"), str("color")}, 0,
           rpc::HostFunctions::Client(kj::mv(kv)));
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.value, "\"red\"");
}

TEST_F(ServerTest, HostFunctionWithoutProviderFailsInTheGuest) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "probe", GUEST_PROBE);
  CallResult r = call(tenant, "probe", "call_host", {str("kv_get"), str("color")});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.code, rpc::ErrorCode::GUEST_ABORT) << r.message;
  EXPECT_NE(r.message.find("kv_get"), std::string::npos) << r.message;
}

TEST_F(ServerTest, SilentHostFunctionIsBoundByTheCallTimeout) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "probe", GUEST_PROBE);
  mustUpload(tenant, "add", GUEST_ADD);
  auto cancelled = kj::newPromiseAndFulfiller<void>();
  rpc::HostFunctions::Client silent = kj::heap<SilentHostFunctions>(kj::mv(cancelled.fulfiller));
  auto other = connect();
  bool done = false;
  auto start = std::chrono::steady_clock::now();
  // 5 s: ample for the 20 pings and calls below on a loaded machine.
  auto waiting =
      callAsync(tenant, "probe", "call_host", {str("kv_get"), str("color")}, 5000, silent)
          .then([&](CallResult r) {
            done = true;
            return r;
          });
  ASSERT_TRUE(waitForStats(
      tenant, "probe", [](auto g) { return g.getBusy() == 1; }, 60s));
  // The worker waits for the client; the RPC thread and the other worker do not.
  for (int i = 0; i < 20; ++i) {
    other->sandpool().pingRequest().send().wait(ws_);
    EXPECT_EQ(call(tenant, "add", "add", {i32(i), i32(i)}).value, std::to_string(2 * i));
  }
  EXPECT_FALSE(done);
  CallResult r = waiting.wait(ws_);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.code, rpc::ErrorCode::TIMEOUT) << r.message;
  // Its own 5 s timeout ended it, not the server's 120 s one.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 60s);
  // The server cancels the forwarded call instead of waiting on it forever.
  io_.provider->getTimer().timeoutAfter(10 * kj::SECONDS, kj::mv(cancelled.promise)).wait(ws_);
}

TEST_F(ServerTest, CliServesKeyValueHostFunction) {
  startServer();
  auto [up_status, up_out] = runCli({"upload", "probe", GUEST_PROBE});
  ASSERT_EQ(up_status, 0) << up_out;
  EXPECT_NE(up_out.find("call_host(string, string) -> string"), std::string::npos) << up_out;

  auto [status, out] = runCli(
      {"call", "probe", "call_host", "kv_get", "color", "--kv", "color=blue", "--kv", "size=9"});
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("\"blue\""), std::string::npos) << out;

  auto [miss_status, miss_out] =
      runCli({"call", "probe", "call_host", "kv_get", "shape", "--kv", "color=blue"});
  EXPECT_EQ(miss_status, 1) << miss_out;
  EXPECT_NE(miss_out.find("guestAbort"), std::string::npos) << miss_out;
  EXPECT_NE(miss_out.find("no key 'shape'"), std::string::npos) << miss_out;

  auto [info_status, info_out] = runCli({"info"});
  EXPECT_EQ(info_status, 0) << info_out;
  EXPECT_NE(info_out.find("tenant alpha: max_vms=8"), std::string::npos) << info_out;

  auto [bad_status, bad_out] = runCli({"--token", "wrong-token-0000000000", "list"});
  EXPECT_EQ(bad_status, 1) << bad_out;
  EXPECT_NE(bad_out.find("unauthenticated"), std::string::npos) << bad_out;
}

TEST_F(ServerTest, CliBenchReportsEveryCallPollingOrNot) {
  startServer();
  auto [up_status, up_out] = runCli({"upload", "add", GUEST_ADD});
  ASSERT_EQ(up_status, 0) << up_out;
  for (const char* poll : {"0", "500"}) {
    auto [status, out] = runCli({"bench", "add", "add", "40", "2", "--concurrency", "8", "--calls",
                                 "400", "--warmup", "40", "--poll-us", poll});
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find("bench add.add concurrency=8 calls=400 errors=0 "), std::string::npos)
        << out;
    EXPECT_NE(out.find("server p50:"), std::string::npos) << out;
  }
  auto [ping_status, ping_out] = runCli({"bench", "ping", "--concurrency", "4", "--calls", "300"});
  EXPECT_EQ(ping_status, 0) << ping_out;
  EXPECT_NE(ping_out.find("bench ping concurrency=4 calls=300 errors=0 "), std::string::npos)
      << ping_out;
  auto [bad_status, bad_out] = runCli({"bench", "ping", "--poll-us", "soon"});
  EXPECT_EQ(bad_status, 2) << bad_out;
  EXPECT_NE(bad_out.find("--poll-us needs a number, got 'soon'"), std::string::npos) << bad_out;
}

TEST_F(ServerTest, CliStatsAndConfigureReadTheirWholeReply) {
  startServer();
  auto tenant = alpha();
  const std::vector<std::pair<std::string, std::string>> guests = {
      {"hello", GUEST_HELLO},         {"add", GUEST_ADD},
      {"echo", GUEST_ECHO},           {"probe", GUEST_PROBE},
      {"misbehave", GUEST_MISBEHAVE}, {"counter", GUEST_COUNTER}};
  for (const auto& [name, path] : guests) mustUpload(tenant, name, path);

  auto [status, out] = runCli({"stats"});
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(out.rfind("queued=0 running=0 overloaded=0\n", 0), 0u) << out;
  for (const auto& [name, path] : guests) {
    EXPECT_NE(out.find("\n" + name + " warm=1 busy=0 waiting=0 created=1 "), std::string::npos)
        << name << "\n"
        << out;
  }

  auto [conf_status, conf_out] = runCli({"configure", "echo", "--min-warm", "2", "--max-vms", "3"});
  ASSERT_EQ(conf_status, 0) << conf_out;
  EXPECT_EQ(conf_out, "echo min_warm=2 max_vms=3\n");
}

// Guests and clients that put line breaks, bytes that are not UTF-8 and a
// megabyte of text where the server quotes them.
class GuestTextTest : public ServerTest {
 protected:
  static constexpr const char* kForged =
      "2026-01-01T00:00:00.000 info event=login tenant=beta peer=forged";

  // Makes misbehave abort with a forged log line and a 0xff byte, fail with
  // an error as large as its output buffer, and be asked for a function
  // whose name holds the same; stops the server and returns its output.
  std::string provokeAndStop() {
    auto tenant = alpha();
    mustUpload(tenant, "misbehave", GUEST_MISBEHAVE);
    std::string message = std::string("x\n") + kForged + " \xff\x1b[2J";
    Arg bytes = [message](rpc::Value::Builder b) {
      b.setBytes(
          kj::arrayPtr(reinterpret_cast<const capnp::byte*>(message.data()), message.size()));
    };
    CallResult aborted = call(tenant, "misbehave", "abort_with", {bytes});
    EXPECT_EQ(aborted.code, rpc::ErrorCode::GUEST_ABORT) << excerpt(aborted.message);
    EXPECT_EQ(aborted.message, std::string("guest aborted: x\\n") + kForged + " \\xff\\x1b[2J");

    CallResult huge = call(tenant, "misbehave", "fail_filling_output", {});
    EXPECT_EQ(huge.code, rpc::ErrorCode::GUEST_ABORT) << excerpt(huge.message, 200);
    EXPECT_EQ(huge.message.rfind("guest function 'fail_filling_output' failed: \\n2026-01-01", 0),
              0u)
        << excerpt(huge.message, 200);
    EXPECT_LE(huge.message.size(), 1024u + 64u);
    EXPECT_TRUE(huge.message.ends_with(" bytes in all]")) << excerpt(huge.message, 200);

    CallResult unknown = call(tenant, "misbehave", "f\n" + std::string(kForged) + "\xff", {});
    EXPECT_EQ(unknown.code, rpc::ErrorCode::UNKNOWN_FUNCTION) << excerpt(unknown.message);
    EXPECT_EQ(unknown.message.find('\n'), std::string::npos) << excerpt(unknown.message);

    connections_.clear();
    EXPECT_EQ(server_->stop(), 0);
    return server_->process().output();
  }

  // At most `size` bytes of `text`, so a failure does not print megabytes.
  static std::string excerpt(const std::string& text, size_t size = 4096) {
    if (text.size() <= size) return text;
    return text.substr(0, size) + "...(" + std::to_string(text.size()) + " bytes in all)";
  }

  static std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }
};

TEST_F(GuestTextTest, TextLogKeepsGuestTextOnItsOwnEscapedLine) {
  startServer();
  std::string output = provokeAndStop();
  size_t forged = 0, longest = 0;
  for (const std::string& line : lines(output)) {
    if (line.rfind(kForged, 0) == 0) ++forged;
    longest = std::max(longest, line.size());
  }
  EXPECT_EQ(forged, 0u) << "a guest forged log lines:\n" << excerpt(output);
  EXPECT_LT(longest, 4096u) << excerpt(output);
  EXPECT_NE(
      output.find(
          std::string("event=call_failed tenant=alpha guest=misbehave function=\"abort_with\" "
                      "error=\"guest-abort: guest aborted: x\\n") +
          kForged + " \\xff\\x1b[2J\"\n"),
      std::string::npos)
      << excerpt(output);
  EXPECT_NE(
      output.find(std::string("event=call_failed tenant=alpha guest=misbehave function=\"f\\n") +
                  kForged + "\\xff\" error=\"unknown-function: "),
      std::string::npos)
      << excerpt(output);
  EXPECT_NE(output.find(" bytes in all]\"\n"), std::string::npos)
      << "the 1 MiB error is cut with a marker";
}

TEST_F(GuestTextTest, EveryJsonLogLineParsesWhateverTheGuestsWrote) {
  startServer({"--log-format", "json"});
  std::string output = provokeAndStop();
  capnp::JsonCodec json;
  size_t log_lines = 0, call_failures = 0;
  for (const std::string& line : lines(output)) {
    if (line.rfind("sandpoold ready ", 0) == 0) continue;  // stdout, not the log
    ++log_lines;
    EXPECT_LT(line.size(), 4096u) << excerpt(line, 200);
    EXPECT_FALSE(kj::encodeUtf32(kj::arrayPtr(line.data(), line.size())).hadErrors)
        << "not UTF-8: " << excerpt(line);
    EXPECT_TRUE(std::none_of(line.begin(), line.end(), [](char c) {
      return static_cast<unsigned char>(c) < 0x20;
    })) << excerpt(line);
    capnp::MallocMessageBuilder message;
    auto value = message.initRoot<capnp::JsonValue>();
    KJ_IF_MAYBE (e, kj::runCatchingExceptions(
                        [&] { json.decodeRaw(kj::arrayPtr(line.data(), line.size()), value); })) {
      ADD_FAILURE() << "not JSON: " << e->getDescription().cStr() << "\n" << excerpt(line);
      continue;
    }
    ASSERT_TRUE(value.isObject()) << excerpt(line);
    std::map<std::string, std::string> fields;
    for (auto field : value.getObject()) {
      if (field.getValue().isString())
        fields[field.getName().cStr()] = field.getValue().getString().cStr();
    }
    EXPECT_EQ(fields.count("time") + fields.count("level") + fields.count("msg"), 3u)
        << excerpt(line);
    if (fields["msg"].rfind("event=call_failed tenant=alpha guest=misbehave ", 0) == 0)
      ++call_failures;
  }
  EXPECT_GT(log_lines, 5u) << excerpt(output);
  EXPECT_EQ(call_failures, 3u) << excerpt(output);
}

TEST_F(ServerTest, StartRemovesTemporaryFilesOfWritesCutShort) {
  startServer();
  {
    auto tenant = alpha();
    mustUpload(tenant, "hello", GUEST_HELLO);
  }
  connections_.clear();
  ASSERT_EQ(server_->stop(), 0);
  server_.reset();

  // What a kill -9 during an upload or a configure leaves: the temporary
  // file beside the final one, here also in the directory of a tenant that
  // is no longer configured. Files of other names stay.
  fs::path guests = dir_.path() / "data" / "guests";
  fs::create_directories(guests / "retired");
  const fs::path upload_cut_short = guests / "alpha" / ".hello.guest.tmp";
  const fs::path configure_cut_short = guests / "retired" / ".old.settings.tmp";
  std::ofstream(upload_cut_short, std::ios::binary) << std::string(4 << 20, '\x7f');
  std::ofstream(configure_cut_short) << "min_warm = 1\n";
  const fs::path others[] = {guests / "alpha" / "notes.tmp", guests / "alpha" / ".tmp",
                             guests / "alpha" / ".keep"};
  for (const auto& path : others) std::ofstream(path) << "not ours\n";

  startServer();
  EXPECT_FALSE(fs::exists(upload_cut_short));
  EXPECT_FALSE(fs::exists(configure_cut_short));
  for (const auto& path : others) EXPECT_TRUE(fs::exists(path)) << path;
  EXPECT_TRUE(server_->process().sawLine("event=stale_temporary_removed path=\"" +
                                         upload_cut_short.string() + "\" bytes=4194304"))
      << server_->process().output();
  EXPECT_TRUE(server_->process().sawLine("event=stale_temporary_removed path=\"" +
                                         configure_cut_short.string() + "\" bytes=13"))
      << server_->process().output();
  auto tenant = alpha();
  CallResult r = call(tenant, "hello", "hello", {str("after the crash")});
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.value, "\"Hello, after the crash!\"");
}

}  // namespace
// The start-up log names the boundary around guests and the system-call
// filters in force (docs/security.md); every other test runs with them.
TEST_F(ServerTest, StartUpLogNamesTheIsolationAndTheSystemCallFilters) {
  startServer();
  const std::string isolation = testBackend() == "kvm" ? "isolation=\"hardware virtualisation\""
                                                       : "isolation=\"software emulation\"";
  EXPECT_TRUE(server_->process().sawLine(isolation)) << server_->process().output();
  EXPECT_TRUE(server_->process().sawLine(
      "event=syscall_filter mode=kill guest_threads=allow_list process=deny_list"))
      << server_->process().output();
  auto tenant = alpha();
  mustUpload(tenant, "hello", GUEST_HELLO);
  CallResult r = call(tenant, "hello", "hello", {str("filtered")});
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.value, "\"Hello, filtered!\"");
}

TEST_F(ServerTest, SystemCallFiltersCanBeTurnedOffAndTheLogSaysSo) {
  startServer({"--syscall-filter", "off"});
  EXPECT_TRUE(server_->process().sawLine("event=syscall_filter mode=off"))
      << server_->process().output();
  ChildProcess refused(SANDPOOLD_BIN, {"--syscall-filter", "audit", "--tenants", "x"});
  EXPECT_EQ(refused.wait(60s), 2);
  EXPECT_NE(refused.output().find("--syscall-filter must be kill, log or off"), std::string::npos)
      << refused.output();
}

// A Wasm module uploads like an ELF (docs/wasm.md): translated in the
// translator process while sandpoold runs under its system-call filter
// (which forbids starting programs), listed with its typed exports, called,
// its traps typed errors, a foreign import refused naming it; and what is
// stored is the ELF, which a restarted server boots without translating.
TEST_F(ServerTest, WasmModulesUploadAndAnswerCallsAndSurviveARestart) {
  startServer();
  {
    auto tenant = alpha();
    mustUpload(tenant, "greet", WASM_GREETING);
    auto list = tenant.listRequest().send().wait(ws_);
    ASSERT_EQ(list.getGuests().size(), 1u);
    bool listed = false;
    for (auto f : list.getGuests()[0].getExports()) {
      listed = listed || (std::string(f.getName().cStr()) == "greet" && f.getParams().size() == 1 &&
                          f.getParams()[0] == rpc::ValueType::STRING &&
                          f.getResult() == rpc::ValueType::STRING);
    }
    EXPECT_TRUE(listed) << "greet(string) -> string";
    CallResult r = call(tenant, "greet", "greet", {str("Lead")});
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.value, "\"Hello, Lead!\"");

    auto refused =
        upload(tenant, "env", readFile(std::string(WASM_TEST_MODULES) + "/import_env.wasm"));
    ASSERT_TRUE(refused);
    EXPECT_NE(refused->find("invalidGuest"), std::string::npos) << *refused;
    EXPECT_NE(refused->find("'env'.'getenv_secret'"), std::string::npos) << *refused;

    mustUpload(tenant, "traps", std::string(WASM_TEST_MODULES) + "/traps.wasm");
    CallResult trapped = call(tenant, "traps", "unreachable", {});
    ASSERT_FALSE(trapped.ok);
    EXPECT_EQ(trapped.code, rpc::ErrorCode::GUEST_ABORT);
    EXPECT_NE(trapped.message.find("wasm trap: unreachable"), std::string::npos) << trapped.message;
    CallResult again = call(tenant, "greet", "greet", {str("again")});
    EXPECT_EQ(again.value, "\"Hello, again!\"") << again.message;
  }
  connections_.clear();
  ASSERT_EQ(server_->stop(), 0);
  server_.reset();

  startServer();
  EXPECT_TRUE(server_->process().sawLine("event=reload tenant=alpha guest=greet"))
      << server_->process().output();
  auto tenant = alpha();
  CallResult r = call(tenant, "greet", "greet", {str("restart")});
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.value, "\"Hello, restart!\"");
}

// A Wasm module calls a host function the caller lends through its
// capability, with a string in and a string out (docs/wasm.md, "Host
// functions"); an address outside its linear memory is a typed trap.
TEST_F(ServerTest, WasmModuleCallsAHostFunctionTheCallerLendsWithStrings) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "kv", std::string(WASM_TEST_MODULES) + "/host_strings.wasm");
  auto kv =
      kj::heap<client::KvHostFunctions>(std::map<std::string, std::string>{{"color", "teal"}});
  client::KvHostFunctions& kv_ref = *kv;
  rpc::HostFunctions::Client host = kj::mv(kv);

  CallResult r = call(tenant, "kv", "lookup", {str("color")}, 0, host);
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.value, "\"teal\"");
  EXPECT_EQ(kv_ref.callCount(), 1u);

  CallResult outside = call(tenant, "kv", "lookup_outside", {}, 0, host);
  ASSERT_FALSE(outside.ok);
  EXPECT_EQ(outside.code, rpc::ErrorCode::GUEST_ABORT);
  EXPECT_NE(outside.message.find("wasm trap: out of bounds memory"), std::string::npos)
      << outside.message;
  EXPECT_EQ(kv_ref.callCount(), 1u) << "the trap comes before any host call";
  r = call(tenant, "kv", "lookup", {str("color")}, 0, host);
  EXPECT_EQ(r.value, "\"teal\"") << r.message;
}

// --wasm-sdk (docs/server.md): a server given a copy of the Wasm SDK
// translates against that copy; one given a folder that is not an SDK does
// not start, naming what is missing.
TEST_F(ServerTest, WasmSdkFlagNamesTheFolderTranslationsCompileAgainst) {
  const fs::path sdk = dir_.path() / "relocated-sdk";
  fs::copy(WASM_SDK_DIR, sdk, fs::copy_options::recursive);
  startServer({"--wasm-sdk", sdk.string()});
  {
    auto tenant = alpha();
    mustUpload(tenant, "greet", WASM_GREETING);
    CallResult r = call(tenant, "greet", "greet", {str("SDK")});
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.value, "\"Hello, SDK!\"");

    // The copy is the one in use: without its bridge library, the next
    // module fails to link.
    fs::remove(sdk / "lib/libsandpool_wasm_runtime.a");
    auto refused =
        upload(tenant, "kv", readFile(std::string(WASM_TEST_MODULES) + "/host_strings.wasm"));
    ASSERT_TRUE(refused);
    EXPECT_NE(refused->find("invalidGuest"), std::string::npos) << *refused;
    EXPECT_NE(refused->find("compile failed"), std::string::npos) << *refused;
  }
  connections_.clear();
  ASSERT_EQ(server_->stop(), 0);
  server_.reset();

  std::ofstream(dir_.path() / "tenants.conf") << "[alpha]\ntoken = " << kAlphaToken << "\n";
  const fs::path not_an_sdk = dir_.path() / "not-an-sdk";
  fs::create_directories(not_an_sdk);
  ChildProcess refused(SANDPOOLD_BIN,
                       {"--tenants", (dir_.path() / "tenants.conf").string(), "--data-dir",
                        (dir_.path() / "data").string(), "--backend", testBackend(), "--allow-root",
                        "--wasm-sdk", not_an_sdk.string()});
  EXPECT_EQ(refused.wait(60s), 1);
  EXPECT_TRUE(refused.sawLine("event=start_failed step=wasm_sdk")) << refused.output();
  EXPECT_TRUE(
      refused.sawLine("SDK header folder '" + (not_an_sdk / "include").string() + "' is missing"))
      << refused.output();
}

// sandpoold's only child process, its Wasm translator; 0 if none.
pid_t translatorPid(pid_t server) {
  std::ifstream children("/proc/" + std::to_string(server) + "/task/" + std::to_string(server) +
                         "/children");
  pid_t translator = 0;
  children >> translator;
  return translator;
}

// The translator process is a child of sandpoold: if it dies, Wasm uploads
// fail with a typed error and everything else goes on.
TEST_F(ServerTest, AWasmTranslatorThatDiedFailsWasmUploadsOnly) {
  startServer();
  const pid_t translator = translatorPid(server_->process().pid());
  ASSERT_GT(translator, 0) << "sandpoold started its translator process";
  std::ifstream cmdline("/proc/" + std::to_string(translator) + "/cmdline");
  std::string args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
  ASSERT_NE(args.find("--serve-wasm-translations"), std::string::npos) << args;
  ASSERT_EQ(::kill(translator, SIGKILL), 0);
  auto tenant = alpha();
  auto refused = upload(tenant, "greet", readFile(WASM_GREETING));
  ASSERT_TRUE(refused);
  EXPECT_NE(refused->find("internal"), std::string::npos) << *refused;
  mustUpload(tenant, "hello", GUEST_HELLO);
  CallResult r = call(tenant, "hello", "hello", {str("still here")});
  EXPECT_EQ(r.value, "\"Hello, still here!\"") << r.message;
}

// The fields of /proc/PID/status or /proc/PID/limits line that starts with
// `key`.
std::vector<std::string> procFields(pid_t pid, const std::string& file, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/" + file);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key, 0) != 0) continue;
    std::istringstream words(line.substr(key.size()));
    std::vector<std::string> fields;
    for (std::string w; words >> w;) fields.push_back(w);
    return fields;
  }
  return {};
}

// What sandpoold creates is its own user's only, and it keeps no core dumps
// (docs/security.md, "Privileges").
TEST_F(ServerTest, DataIsPrivateAndNoCoreIsDumped) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "hello", GUEST_HELLO);
  const fs::path data = dir_.path() / "data";
  EXPECT_EQ(fs::status(data).permissions(), fs::perms::owner_all);
  EXPECT_EQ(fs::status(data / "guests").permissions(), fs::perms::owner_all);
  size_t stored = 0;
  for (const auto& entry : fs::recursive_directory_iterator(data / "guests")) {
    if (!entry.is_regular_file()) continue;
    ++stored;
    EXPECT_EQ(entry.status().permissions(), fs::perms::owner_read | fs::perms::owner_write)
        << entry.path();
  }
  EXPECT_GT(stored, 0u);
  const auto core = procFields(server_->process().pid(), "limits", "Max core file size");
  ASSERT_GE(core.size(), 2u);
  EXPECT_EQ(core[0], "0");
  EXPECT_EQ(core[1], "0");
}

TEST_F(ServerTest, RootIsRefusedUnlessToldOrGivenAUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "only root is refused";
  std::ofstream(dir_.path() / "tenants.conf") << "[alpha]\ntoken = " << kAlphaToken << "\n";
  ChildProcess refused(SANDPOOLD_BIN,
                       {"--tenants", (dir_.path() / "tenants.conf").string(), "--data-dir",
                        (dir_.path() / "data").string(), "--backend", testBackend()});
  EXPECT_EQ(refused.wait(60s), 1);
  EXPECT_TRUE(refused.sawLine("sandpoold refuses to run as root: give --user NAME"))
      << refused.output();
  ChildProcess no_such_user(SANDPOOLD_BIN,
                            {"--tenants", (dir_.path() / "tenants.conf").string(), "--data-dir",
                             (dir_.path() / "data").string(), "--user", "no-such-user-here"});
  EXPECT_EQ(no_such_user.wait(60s), 1);
  EXPECT_TRUE(no_such_user.sawLine("--user: no user 'no-such-user-here'")) << no_such_user.output();
}

// Started as root with --user, sandpoold opens its sockets and its data
// directory, then serves as that user: every thread, and the Wasm
// translator process too. Stored guests are the user's.
TEST_F(ServerTest, DropsToTheGivenUserOnceItsSocketsAreOpen) {
  if (::geteuid() != 0) GTEST_SKIP() << "changing user needs root";
  passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  // The user must reach the data directory inside the test's folder.
  fs::permissions(dir_.path(),
                  fs::perms::owner_all | fs::perms::others_exec | fs::perms::group_exec);
  startServer({"--user", "nobody"});
  EXPECT_TRUE(server_->process().sawLine("event=privileges_dropped user=nobody uid=" +
                                         std::to_string(nobody->pw_uid)))
      << server_->process().output();
  const pid_t pid = server_->process().pid();
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    const auto uids =
        procFields(pid, "task/" + task.path().filename().string() + "/status", "Uid:");
    ASSERT_EQ(uids.size(), 4u) << task.path();
    for (const auto& uid : uids) EXPECT_EQ(uid, std::to_string(nobody->pw_uid)) << task.path();
  }
  auto tenant = alpha();
  mustUpload(tenant, "hello", GUEST_HELLO);
  CallResult r = call(tenant, "hello", "hello", {str("nobody")});
  EXPECT_EQ(r.value, "\"Hello, nobody!\"") << r.message;
  mustUpload(tenant, "greet", WASM_GREETING);
  const pid_t translator = translatorPid(pid);
  ASSERT_GT(translator, 0);
  EXPECT_EQ(procFields(translator, "status", "Uid:").at(1), std::to_string(nobody->pw_uid));
  for (const auto& entry : fs::recursive_directory_iterator(dir_.path() / "data")) {
    struct stat st {};
    ASSERT_EQ(::lstat(entry.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, nobody->pw_uid) << entry.path();
  }
}

// The translation cache (docs/wasm.md): a module uploaded again, under
// another name by another tenant, is not translated again: it uploads even
// with the translator process gone, and the log says it came from the cache.
TEST_F(ServerTest, AWasmModuleUploadedAgainIsTakenFromTheTranslationCache) {
  startServer();
  auto a = alpha();
  mustUpload(a, "greet", WASM_GREETING);
  auto translated =
      server_->process().waitForLine("event=wasm_translation tenant=alpha guest=greet", 60s);
  ASSERT_TRUE(translated) << server_->process().output();
  EXPECT_NE(translated->find("cached=false"), std::string::npos) << *translated;
  const pid_t translator = translatorPid(server_->process().pid());
  ASSERT_GT(translator, 0) << "sandpoold started its translator process";
  ASSERT_EQ(::kill(translator, SIGKILL), 0);

  auto b_conn = connect();
  auto b = login(*b_conn, kBetaToken);
  mustUpload(b, "hi", WASM_GREETING);
  auto cached = server_->process().waitForLine("event=wasm_translation tenant=beta guest=hi", 60s);
  ASSERT_TRUE(cached) << server_->process().output();
  EXPECT_NE(cached->find("cached=true"), std::string::npos) << *cached;
  CallResult r = call(b, "hi", "greet", {str("cache")});
  EXPECT_EQ(r.value, "\"Hello, cache!\"") << r.message;
}

// Long calls step aside (docs/server.md, "Long calls"): a tenant whose
// calls spin until their timeout, three times as many as there are workers,
// does not hold the workers from another tenant, whose call is answered
// while none of the spinning calls has ended and at least the four that a
// tenant may have set aside (twice the workers) are running.
TEST_F(ServerTest, SpinningCallsOfOneTenantLeaveTheWorkersToAnother) {
  startServer({"--workers", "2"});
  auto a = alpha();
  mustUpload(a, "misbehave", GUEST_MISBEHAVE);
  auto b_conn = connect();
  auto b = login(*b_conn, kBetaToken);
  mustUpload(b, "add", GUEST_ADD);
  int a_answered = 0;
  kj::Vector<kj::Promise<void>> spins;
  for (int i = 0; i < 6; ++i) {
    spins.add(callAsync(a, "misbehave", "spin", {}, 20000).then([&a_answered](CallResult r) {
      ++a_answered;
      EXPECT_EQ(r.code, rpc::ErrorCode::TIMEOUT) << r.message;
    }));
  }
  ASSERT_TRUE(waitForStats(
      a, "misbehave", [](auto g) { return g.getBusy() >= 4; }, 60s));
  CallResult answered = call(b, "add", "add", {i32(40), i32(2)});
  ASSERT_TRUE(answered.ok) << answered.message;
  EXPECT_EQ(answered.value, "42");
  EXPECT_EQ(a_answered, 0) << "b's call waited for one of a's to end";
  kj::joinPromises(spins.releaseAsArray()).wait(ws_);
  EXPECT_EQ(a_answered, 6);
}

// Uploads boot one at a time per tenant: a tenant whose guests'
// initialisation spins until the boot timeout holds one boot thread, and
// another tenant's upload completes while all of its uploads still wait.
TEST_F(ServerTest, UploadsThatSpinInInitialisationLeaveBootsToAnotherTenant) {
  startServer();
  auto a = alpha();
  auto b_conn = connect();
  auto b = login(*b_conn, kBetaToken);
  const std::vector<uint8_t> spinning = readFile(GUEST_BAD_INIT);
  int a_answered = 0;
  kj::Vector<kj::Promise<void>> a_uploads;
  for (int i = 0; i < 4; ++i) {
    auto request = a.uploadRequest();
    request.setName("spin" + std::to_string(i));
    request.setElf(kj::arrayPtr(spinning.data(), spinning.size()));
    a_uploads.add(request.send().then([&a_answered](auto response) {
      ++a_answered;
      ASSERT_TRUE(response.getResult().isError());
      EXPECT_EQ(response.getResult().getError().getCode(), rpc::ErrorCode::INVALID_GUEST);
    }));
  }
  auto b_upload = b.uploadRequest();
  const std::vector<uint8_t> add = readFile(GUEST_ADD);
  b_upload.setName("add");
  b_upload.setElf(kj::arrayPtr(add.data(), add.size()));
  auto b_response = b_upload.send().wait(ws_);
  ASSERT_FALSE(b_response.getResult().isError())
      << client::describe(b_response.getResult().getError());
  EXPECT_EQ(a_answered, 0) << "b's upload waited for a's boots";
  CallResult r = call(b, "add", "add", {i32(1), i32(2)});
  EXPECT_EQ(r.value, "3") << r.message;
  kj::joinPromises(a_uploads.releaseAsArray()).wait(ws_);
  EXPECT_EQ(a_answered, 4);
}

// A host function that fails the way a Python client's does: pycapnp sends
// the whole traceback, with the client's file paths, as the exception.
class RaisingHostFunctions final : public rpc::HostFunctions::Server {
 protected:
  kj::Promise<void> call(CallContext) override {
    return KJ_EXCEPTION(FAILED,
                        "Traceback (most recent call last):\n"
                        "  File \"/home/someone/secret-project/client.py\", line 42, in kv_get\n"
                        "    raise KeyError(key)\n"
                        "KeyError: 'color'\n");
  }
};

// The guest learns the exception's message, not the client's traceback.
TEST_F(ServerTest, HostFunctionThatRaisesGivesTheGuestItsMessageOnly) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "probe", GUEST_PROBE);
  CallResult r = call(tenant, "probe", "call_host", {str("kv_get"), str("color")}, 0,
                      rpc::HostFunctions::Client(kj::heap<RaisingHostFunctions>()));
  ASSERT_FALSE(r.ok);
  EXPECT_EQ(r.code, rpc::ErrorCode::GUEST_ABORT) << r.message;
  EXPECT_NE(r.message.find("host function 'kv_get' failed in the client: KeyError: 'color'"),
            std::string::npos)
      << r.message;
  EXPECT_EQ(r.message.find("Traceback"), std::string::npos) << r.message;
  EXPECT_EQ(r.message.find("/home/someone"), std::string::npos) << r.message;
}

// docs/rpc.md's error table is the contract clients are written from: it
// lists every code of the schema.
TEST(ErrorTable, DocsListEveryErrorCodeOfTheSchema) {
  std::ifstream in(std::string(SANDPOOL_SOURCE_DIR) + "/docs/rpc.md");
  const std::string docs((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(docs.empty());
  for (auto enumerant : capnp::Schema::from<rpc::ErrorCode>().getEnumerants()) {
    const std::string row = "| `" + std::string(enumerant.getProto().getName().cStr()) + "` |";
    EXPECT_NE(docs.find(row), std::string::npos) << "docs/rpc.md has no row " << row;
  }
}

// The cases where code and table once disagreed, pinned to the table.
TEST_F(ServerTest, ErrorCodesAreTheOnesTheTableGives) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "misbehave", GUEST_MISBEHAVE);
  mustUpload(tenant, "echo", GUEST_ECHO);
  CallResult bad_name = call(tenant, "../etc", "add", {i32(1), i32(2)});
  EXPECT_EQ(bad_name.code, rpc::ErrorCode::UNKNOWN_GUEST) << bad_name.message;
  auto refused = upload(tenant, "../etc", readFile(GUEST_ADD));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->rfind("invalidArgument:", 0), 0u) << *refused;
  CallResult huge = call(tenant, "misbehave", "huge_result", {});
  EXPECT_EQ(huge.code, rpc::ErrorCode::LIMIT_EXCEEDED) << huge.message;
  CallResult too_many_args = call(tenant, "echo", "echo", {str(std::string(2 << 20, 'x'))});
  EXPECT_EQ(too_many_args.code, rpc::ErrorCode::LIMIT_EXCEEDED) << too_many_args.message;
}

// Metrics and health over HTTP (--listen-metrics; docs/server.md, "Metrics
// and health"), scraped with curl as an operator's tools would.

struct HttpAnswer {
  int status = 0;
  std::string body;
};

// `curl` against the server's metrics address; `method` as curl's -X.
HttpAnswer httpRequest(const TempDir& dir, const std::string& address, const std::string& path,
                       const std::string& method = "GET") {
  const fs::path body = dir.path() / "http-body";
  ChildProcess curl("/usr/bin/curl", {"-sS", "-X", method, "-o", body.string(), "-w",
                                      "%{http_code}\n", "http://" + address + path});
  EXPECT_EQ(curl.wait(60s), 0) << curl.output();
  std::ifstream in(body);
  return {std::atoi(curl.output().c_str()),
          std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>())};
}

// The value of the sample `series` (name and labels as the page writes
// them), or nothing if the page has no such line.
std::optional<double> sample(const std::string& page, const std::string& series) {
  std::istringstream lines(page);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ')
      return std::stod(line.substr(series.size() + 1));
  }
  return std::nullopt;
}

// `promtool check metrics` on `page`: its exit status and what it said.
std::pair<int, std::string> promtoolCheck(const TempDir& dir, const std::string& page) {
  const fs::path file = dir.path() / "scraped.prom";
  std::ofstream(file) << page;
  ChildProcess promtool("/bin/sh", {"-c", "promtool check metrics < \"$0\"", file.string()});
  int status = promtool.wait(60s).value_or(-1);
  return {status, promtool.output()};
}

TEST_F(ServerTest, MetricsCountRealCallsAndPassPromtool) {
  startServer({"--listen-metrics", "127.0.0.1:0"});
  const std::string address = server_->metricsAddress();
  ASSERT_FALSE(address.empty()) << "the ready line names the metrics address";
  EXPECT_EQ(httpRequest(dir_, address, "/healthz").status, 200);
  EXPECT_EQ(httpRequest(dir_, address, "/readyz").status, 200) << "ready once the line is out";
  EXPECT_EQ(httpRequest(dir_, address, "/nothing-here").status, 404);
  EXPECT_EQ(httpRequest(dir_, address, "/metrics", "POST").status, 405);
  {
    // A request header past 8 KiB is not answered: the connection closes.
    ChildProcess curl("/usr/bin/curl", {"-s", "-o", "/dev/null", "-w", "%{http_code}\n", "-H",
                                        "X-Padding: " + std::string(16 << 10, 'x'),
                                        "http://" + address + "/healthz"});
    curl.wait(60s);
    EXPECT_EQ(std::atoi(curl.output().c_str()), 0) << curl.output();
  }

  auto tenant = alpha();
  mustUpload(tenant, "add", GUEST_ADD);
  const std::string ok = R"(sandpool_calls_total{tenant="alpha",guest="add",outcome="ok"})";
  const std::string unknown_function =
      R"(sandpool_calls_total{tenant="alpha",guest="add",outcome="unknownFunction"})";
  const std::string no_guest =
      R"(sandpool_calls_total{tenant="alpha",guest="",outcome="unknownGuest"})";
  const std::string refused = "sandpool_logins_refused_total";
  HttpAnswer before = httpRequest(dir_, address, "/metrics");
  ASSERT_EQ(before.status, 200) << before.body;
  ASSERT_TRUE(sample(before.body, ok)) << before.body;
  EXPECT_EQ(sample(before.body, R"(sandpool_uploads_total{tenant="alpha",outcome="ok"})"), 1.0);

  constexpr int kCalls = 7;
  for (int i = 0; i < kCalls; ++i) ASSERT_TRUE(call(tenant, "add", "add", {i32(i), i32(1)}).ok);
  EXPECT_EQ(call(tenant, "add", "no_such_function", {}).code, rpc::ErrorCode::UNKNOWN_FUNCTION);
  EXPECT_EQ(call(tenant, "no_such_guest", "add", {}).code, rpc::ErrorCode::UNKNOWN_GUEST);
  {
    auto conn = connect();
    auto request = conn->sandpool().loginRequest();
    request.setToken("not-a-token-of-anyone");
    ASSERT_TRUE(request.send().wait(ws_).getResult().isError());
  }

  HttpAnswer after = httpRequest(dir_, address, "/metrics");
  ASSERT_EQ(after.status, 200);
  EXPECT_EQ(*sample(after.body, ok) - *sample(before.body, ok), kCalls);
  EXPECT_EQ(*sample(after.body, unknown_function) - sample(before.body, unknown_function).value(),
            1.0);
  EXPECT_EQ(sample(before.body, no_guest), std::nullopt);
  EXPECT_EQ(sample(after.body, no_guest), 1.0);
  EXPECT_EQ(*sample(after.body, refused) - *sample(before.body, refused), 1.0);
  // Every call that ran has its phases in the histograms.
  const std::string run_count =
      R"(sandpool_call_duration_seconds_count{tenant="alpha",guest="add",phase="run"})";
  EXPECT_EQ(*sample(after.body, run_count) - *sample(before.body, run_count), kCalls + 1);
  EXPECT_EQ(sample(after.body, R"(sandpool_call_duration_seconds_bucket{tenant="alpha",)"
                               R"(guest="add",phase="total",le="+Inf"})"),
            sample(after.body, R"(sandpool_call_duration_seconds_count{tenant="alpha",)"
                               R"(guest="add",phase="total"})"));
  // The names the autoscaler's manifests use.
  EXPECT_EQ(sample(after.body, R"(sandpool_queue_depth{tenant="alpha"})"), 0.0);
  EXPECT_GE(sample(after.body, R"(sandpool_vms{tenant="alpha",guest="add",state="warm"})"), 1.0);
  EXPECT_EQ(sample(after.body, R"(sandpool_vms{tenant="alpha",guest="add",state="busy"})"), 0.0);
  EXPECT_GE(sample(after.body, R"(sandpool_connections{state="authenticated"})"), 1.0);
  EXPECT_GT(sample(after.body, "sandpool_process_resident_memory_bytes"), 0.0);
  // The guest's snapshot, held once: the same bytes in stats and on the page.
  auto stats = tenant.statsRequest().send().wait(ws_);
  ASSERT_EQ(stats.getStats().getGuests().size(), 1u);
  const uint64_t snapshot_bytes = stats.getStats().getGuests()[0].getSnapshotBytes();
  EXPECT_GT(snapshot_bytes, 0u);
  EXPECT_EQ(snapshot_bytes % 4096, 0u) << "whole pages of the memfd";
  EXPECT_EQ(sample(after.body, R"(sandpool_snapshot_bytes{tenant="alpha",guest="add"})"),
            static_cast<double>(snapshot_bytes));

  auto [status, said] = promtoolCheck(dir_, after.body);
  EXPECT_EQ(status, 0) << said;
  EXPECT_EQ(said, "") << "promtool's lint has no complaint";
}

// VM settings per guest (docs/rpc.md, "VM settings").

constexpr uint64_t kMiB = 1 << 20;

TEST_F(ServerTest, UploadWithoutVmSettingsGetsTheFlagsDefaults) {
  startServer({"--guest-memory-mib", "32", "--guest-output-kib", "512"});
  auto tenant = alpha();
  mustUpload(tenant, "echo", GUEST_ECHO);
  auto vm = listedVm(tenant, "echo");
  EXPECT_EQ(vm.getMemoryBytes(), 32 * kMiB);
  EXPECT_EQ(vm.getStackBytes(), 1 * kMiB);
  EXPECT_EQ(vm.getInputBytes(), 1 * kMiB);
  EXPECT_EQ(vm.getOutputBytes(), 512u << 10);
  EXPECT_EQ(vm.getMaxHostCalls(), 100000u);
}

TEST_F(ServerTest, UploadWithVmSettingsRunsItsVmsWithThem) {
  startServer();
  auto tenant = alpha();
  auto uploaded = uploadWithVm(tenant, "echo", GUEST_ECHO, [](auto vm) {
    vm.setMemoryBytes(32 * kMiB);
    vm.setStackBytes(64 << 10);
    vm.setInputBytes(4 * kMiB);
    vm.setOutputBytes(4 * kMiB);
  });
  ASSERT_TRUE(uploaded.getResult().isGuest()) << client::describe(uploaded.getResult().getError());
  auto answered = uploaded.getResult().getGuest().getVmSettings();
  EXPECT_EQ(answered.getMemoryBytes(), 32 * kMiB);
  EXPECT_EQ(answered.getStackBytes(), 64u << 10);
  EXPECT_EQ(answered.getInputBytes(), 4 * kMiB);
  EXPECT_EQ(answered.getOutputBytes(), 4 * kMiB);
  EXPECT_EQ(answered.getMaxHostCalls(), 100000u) << "a field left 0 takes the default";
  EXPECT_EQ(listedVm(tenant, "echo").getOutputBytes(), 4 * kMiB);
  auto guest = guestOf(tenant, "echo").getResult().getGuest();
  auto info = guest.infoRequest().send().wait(ws_);
  EXPECT_EQ(info.getResult().getInfo().getVmSettings().getInputBytes(), 4 * kMiB);

  // 3 MiB in and out: past the default 1 MiB buffers, within these.
  CallResult big = call(tenant, "echo", "echo_bytes", {bytes(3 * kMiB)});
  EXPECT_TRUE(big.ok) << big.message;
  mustUpload(tenant, "echo-default", GUEST_ECHO);
  CallResult refused = call(tenant, "echo-default", "echo_bytes", {bytes(3 * kMiB)});
  EXPECT_EQ(refused.code, rpc::ErrorCode::LIMIT_EXCEEDED) << refused.message;
}

TEST_F(ServerTest, ResultLargerThanASmallOutputBufferIsLimitExceeded) {
  startServer();
  auto tenant = alpha();
  auto uploaded =
      uploadWithVm(tenant, "echo", GUEST_ECHO, [](auto vm) { vm.setOutputBytes(8 << 10); });
  ASSERT_TRUE(uploaded.getResult().isGuest()) << client::describe(uploaded.getResult().getError());
  CallResult fits = call(tenant, "echo", "echo_bytes", {bytes(4 << 10)});
  EXPECT_TRUE(fits.ok) << fits.message;
  CallResult too_large = call(tenant, "echo", "echo_bytes", {bytes(16 << 10)});
  EXPECT_EQ(too_large.code, rpc::ErrorCode::LIMIT_EXCEEDED) << too_large.message;
  EXPECT_NE(too_large.message.find("does not fit the output buffer"), std::string::npos)
      << too_large.message;
  CallResult after = call(tenant, "echo", "echo_bytes", {bytes(4 << 10)});
  EXPECT_TRUE(after.ok) << "the VM serves the next call: " << after.message;
}

TEST_F(ServerTest, HostCallLimitIsTheGuestsOwn) {
  startServer();
  auto tenant = alpha();
  auto uploaded =
      uploadWithVm(tenant, "misbehave", GUEST_MISBEHAVE, [](auto vm) { vm.setMaxHostCalls(5); });
  ASSERT_TRUE(uploaded.getResult().isGuest()) << client::describe(uploaded.getResult().getError());
  CallResult storm = call(tenant, "misbehave", "host_call_storm", {});
  EXPECT_EQ(storm.code, rpc::ErrorCode::LIMIT_EXCEEDED) << storm.message;
  EXPECT_NE(storm.message.find("more than 5 host calls"), std::string::npos) << storm.message;
}

TEST_F(ServerTest, VmSettingsOutsideTheLimitsAreInvalidArgument) {
  startServer({"--guest-memory-max-mib", "256", "--guest-buffer-max-kib", "8192",
               "--guest-host-calls", "100", "--guest-host-calls-max", "1000"});
  auto tenant = alpha();
  using Choose = std::function<void(rpc::VmSettings::Builder)>;
  const std::vector<std::pair<const char*, Choose>> refused = {
      {"memory not a multiple of 2 MiB", [](auto vm) { vm.setMemoryBytes(5 * kMiB); }},
      {"memory below the least that boots", [](auto vm) { vm.setMemoryBytes(2 * kMiB); }},
      {"memory past --guest-memory-max-mib", [](auto vm) { vm.setMemoryBytes(258 * kMiB); }},
      {"stack not page-aligned", [](auto vm) { vm.setStackBytes(5000); }},
      {"stack below the least", [](auto vm) { vm.setStackBytes(4096); }},
      {"output past --guest-buffer-max-kib", [](auto vm) { vm.setOutputBytes(16 * kMiB); }},
      {"input not page-aligned", [](auto vm) { vm.setInputBytes(100); }},
      {"host calls past --guest-host-calls-max", [](auto vm) { vm.setMaxHostCalls(1001); }},
      {"buffers that leave no room in memory",
       [](auto vm) {
         vm.setMemoryBytes(8 * kMiB);
         vm.setInputBytes(2 * kMiB);
         vm.setOutputBytes(2 * kMiB);
       }},
  };
  mustUpload(tenant, "echo", GUEST_ECHO);
  for (const auto& [what, choose] : refused) {
    SCOPED_TRACE(what);
    auto uploaded = uploadWithVm(tenant, "other", GUEST_ECHO, choose);
    ASSERT_TRUE(uploaded.getResult().isError());
    EXPECT_EQ(uploaded.getResult().getError().getCode(), rpc::ErrorCode::INVALID_ARGUMENT)
        << client::describe(uploaded.getResult().getError());
    auto configured = configureVm(tenant, "echo", choose);
    ASSERT_TRUE(configured.getResult().isError());
    EXPECT_EQ(configured.getResult().getError().getCode(), rpc::ErrorCode::INVALID_ARGUMENT)
        << client::describe(configured.getResult().getError());
  }
  EXPECT_EQ(guestNames(tenant), std::vector<std::string>{"echo"});
  EXPECT_EQ(listedVm(tenant, "echo").getMemoryBytes(), 64 * kMiB) << "a refusal changes nothing";
}

TEST_F(ServerTest, GuestMemoryTimesItsVmsStaysWithinTheMemoryQuota) {
  // alpha: 8 VMs and the default 1 GiB of guest memory.
  startServer({"--guest-memory-max-mib", "2048"});
  auto tenant = alpha();
  auto over =
      uploadWithVm(tenant, "echo", GUEST_ECHO, [](auto vm) { vm.setMemoryBytes(1536 * kMiB); });
  ASSERT_TRUE(over.getResult().isError());
  EXPECT_EQ(over.getResult().getError().getCode(), rpc::ErrorCode::QUOTA_EXCEEDED)
      << client::describe(over.getResult().getError());

  auto uploaded =
      uploadWithVm(tenant, "echo", GUEST_ECHO, [](auto vm) { vm.setMemoryBytes(256 * kMiB); });
  ASSERT_TRUE(uploaded.getResult().isGuest()) << client::describe(uploaded.getResult().getError());
  EXPECT_EQ(uploaded.getResult().getGuest().getSettings().getMaxVms(), 4u)
      << "the default pool (8 VMs) shrinks to what the memory quota holds";

  auto more_vms = tenant.configureRequest();
  more_vms.setGuest("echo");
  more_vms.getSettings().setMinWarm(1);
  more_vms.getSettings().setMaxVms(5);
  auto refused_vms = more_vms.send().wait(ws_);
  ASSERT_TRUE(refused_vms.getResult().isError());
  EXPECT_EQ(refused_vms.getResult().getError().getCode(), rpc::ErrorCode::QUOTA_EXCEEDED);

  auto more_memory = configureVm(tenant, "echo", [](auto vm) { vm.setMemoryBytes(512 * kMiB); });
  ASSERT_TRUE(more_memory.getResult().isError());
  EXPECT_EQ(more_memory.getResult().getError().getCode(), rpc::ErrorCode::QUOTA_EXCEEDED)
      << client::describe(more_memory.getResult().getError());
  EXPECT_EQ(listedVm(tenant, "echo").getMemoryBytes(), 256 * kMiB);
}

TEST_F(ServerTest, ConfigureVmSettingsBootsANewVersionAndKeepsThePool) {
  startServer();
  auto tenant = alpha();
  mustUpload(tenant, "echo", GUEST_ECHO);
  auto pool = tenant.configureRequest();
  pool.setGuest("echo");
  pool.getSettings().setMinWarm(2);
  pool.getSettings().setMaxVms(3);
  ASSERT_TRUE(pool.send().wait(ws_).getResult().isSettings());
  auto guest = guestOf(tenant, "echo").getResult().getGuest();
  CallResult before = call(tenant, "echo", "echo_bytes", {bytes(16 << 10)});
  ASSERT_TRUE(before.ok) << before.message;

  auto configured = configureVm(tenant, "echo", [](auto vm) { vm.setOutputBytes(8 << 10); });
  auto result = configured.getResult();
  ASSERT_TRUE(result.isSettings()) << client::describe(result.getError());
  EXPECT_EQ(result.getVmSettings().getOutputBytes(), 8u << 10);
  EXPECT_EQ(result.getVmSettings().getInputBytes(), 1 * kMiB) << "fields left 0 are unchanged";
  EXPECT_EQ(result.getSettings().getMinWarm(), 2u) << "pool settings left unset are unchanged";
  EXPECT_EQ(result.getSettings().getMaxVms(), 3u);
  EXPECT_EQ(listedVm(tenant, "echo").getOutputBytes(), 8u << 10);

  CallResult after = call(tenant, "echo", "echo_bytes", {bytes(16 << 10)});
  EXPECT_EQ(after.code, rpc::ErrorCode::LIMIT_EXCEEDED) << "the new VMs have the small buffer";
  auto through_guest = guest.callRequest();
  through_guest.setFunction("echo_bytes");
  through_guest.initArgs(1)[0].initBytes(4 << 10);
  auto answer = through_guest.send().wait(ws_);
  EXPECT_TRUE(answer.getResult().isOk()) << "a Guest capability follows the new version";
  EXPECT_TRUE(waitForStats(
      tenant, "echo", [](auto g) { return g.getWarm() == 2; }, 60s));
}

TEST_F(ServerTest, CliSetsAndShowsVmSettings) {
  startServer();
  auto [status, out] = runCli({"upload", "echo", GUEST_ECHO, "--output-kib", "8"});
  ASSERT_EQ(status, 0) << out;
  EXPECT_NE(out.find("\n  vm: memory_mib=64 stack_kib=1024 input_kib=1024 output_kib=8 "
                     "max_host_calls=100000\n"),
            std::string::npos)
      << out;
  auto [conf_status, conf_out] = runCli({"configure", "echo", "--max-host-calls", "9"});
  ASSERT_EQ(conf_status, 0) << conf_out;
  EXPECT_EQ(conf_out,
            "echo min_warm=1 max_vms=8\n  vm: memory_mib=64 stack_kib=1024 input_kib=1024 "
            "output_kib=8 max_host_calls=9\n");
  auto [list_status, list_out] = runCli({"list"});
  ASSERT_EQ(list_status, 0) << list_out;
  EXPECT_NE(list_out.find("output_kib=8 max_host_calls=9\n"), std::string::npos) << list_out;
  auto [bad_status, bad_out] = runCli({"configure", "echo", "--stack-kib", "5"});
  EXPECT_EQ(bad_status, 1) << bad_out;
  EXPECT_NE(bad_out.find("invalidArgument"), std::string::npos) << bad_out;
}

// A number the request's field cannot hold is the CLI's usage error, never
// a wrapped-around value sent to the server.
TEST_F(ServerTest, CliRefusesNumbersItsRequestCannotHold) {
  startServer();
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"configure", "echo", "--memory-mib", "-2"}, "--memory-mib needs a number, got '-2'"},
      {{"configure", "echo", "--min-warm", "-1"}, "--min-warm needs a number, got '-1'"},
      {{"configure", "echo", "--max-host-calls", "5000000000"},
       "--max-host-calls must be at most 4294967295, got 5000000000"},
      {{"configure", "echo", "--memory-mib", "99999999999999999999"},
       "--memory-mib must be at most 17592186044415"},
      {{"--timeout-ms", "-5", "call", "echo", "echo", "x"}, "--timeout-ms needs a number"}};
  for (const auto& [args, said] : cases) {
    auto [status, out] = runCli(args);
    EXPECT_EQ(status, 2) << out;
    EXPECT_NE(out.find(said), std::string::npos) << out;
  }
}

TEST_F(ServerTest, VmSettingsSurviveARestart) {
  startServer();
  {
    auto tenant = alpha();
    auto uploaded = uploadWithVm(tenant, "echo", GUEST_ECHO, [](auto vm) {
      vm.setOutputBytes(8 << 10);
      vm.setMaxHostCalls(77);
    });
    ASSERT_TRUE(uploaded.getResult().isGuest())
        << client::describe(uploaded.getResult().getError());
    auto configured = configureVm(tenant, "echo", [](auto vm) { vm.setStackBytes(128 << 10); });
    ASSERT_TRUE(configured.getResult().isSettings())
        << client::describe(configured.getResult().getError());
  }
  connections_.clear();
  ASSERT_EQ(server_->stop(), 0);
  server_.reset();

  startServer();
  auto tenant = alpha();
  auto vm = listedVm(tenant, "echo");
  EXPECT_EQ(vm.getOutputBytes(), 8u << 10);
  EXPECT_EQ(vm.getMaxHostCalls(), 77u);
  EXPECT_EQ(vm.getStackBytes(), 128u << 10);
  EXPECT_EQ(vm.getMemoryBytes(), 64 * kMiB);
  CallResult too_large = call(tenant, "echo", "echo_bytes", {bytes(16 << 10)});
  EXPECT_EQ(too_large.code, rpc::ErrorCode::LIMIT_EXCEEDED) << too_large.message;
  CallResult fits = call(tenant, "echo", "echo_bytes", {bytes(4 << 10)});
  EXPECT_TRUE(fits.ok) << fits.message;
}

}  // namespace sandpool
