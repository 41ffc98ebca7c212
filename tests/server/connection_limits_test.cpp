// What one client may cost sandpoold (docs/security.md, "Connections and
// messages"): a real server process, and clients that speak the Cap'n Proto
// RPC protocol frame by frame over real sockets, so that they can send what
// no well-behaved client library would (a million capabilities in one
// message, a connection that never logs in).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <capnp/message.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize-async.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>

#include "clients/cpp/client.h"
#include "tests/server/server_process.h"

namespace sandpool {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::ChildProcess;
using testing::ServerProcess;
using testing::TempDir;

constexpr const char* kToken = "alpha-token-0123456789";
// The message of the report: one call whose capability table has a million
// entries (15 MiB on the wire).
constexpr uint32_t kFloodCaps = 1'000'000;
// A bound on waiting for what must happen, far beyond any plausible run.
constexpr auto kGuard = 30 * kj::SECONDS;

// A line of /proc/<pid>/status in bytes ("VmRSS:", "VmHWM:").
uint64_t statusBytes(pid_t pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (status >> key) {
    if (key == field) {
      uint64_t kib = 0;
      status >> kib;
      return kib << 10;
    }
    status.ignore(1 << 20, '\n');
  }
  ADD_FAILURE() << "no " << field << " for pid " << pid;
  return 0;
}

// The server's memory while a test attacks it: its resident memory before,
// and (through the kernel's peak counter, reset here) the most it reached
// until expectGrewLessThan().
class MemoryWatch {
 public:
  explicit MemoryWatch(pid_t pid) : pid_(pid), before_(statusBytes(pid, "VmRSS:")) {
    std::ofstream("/proc/" + std::to_string(pid) + "/clear_refs") << "5";  // resets VmHWM to VmRSS
  }

  void expectGrewLessThan(uint64_t bytes) {
    const uint64_t peak = statusBytes(pid_, "VmHWM:");
    const uint64_t after = statusBytes(pid_, "VmRSS:");
    EXPECT_LT(peak, before_ + bytes) << "resident before " << before_ << ", peak " << peak;
    EXPECT_LT(after, before_ + bytes) << "resident before " << before_ << ", after " << after;
  }

 private:
  pid_t pid_;
  uint64_t before_;
};

// A client that writes and reads raw rpc.capnp messages on a real socket.
class RawRpcClient {
 public:
  RawRpcClient(kj::AsyncIoContext& io, const std::string& address)
      : io_(io),
        stream_(io.provider->getNetwork()
                    .parseAddress(address)
                    .wait(io.waitScope)
                    ->connect()
                    .wait(io.waitScope)) {}

  // Writes `message`; a failure to write (the server closed the connection
  // while we wrote) is left for awaitClose() to observe.
  void send(capnp::MessageBuilder& message) {
    kj::runCatchingExceptions([&] { capnp::writeMessage(*stream_, message).wait(io_.waitScope); });
  }

  void bootstrap(uint32_t question) {
    capnp::MallocMessageBuilder message;
    message.initRoot<capnp::rpc::Message>().initBootstrap().setQuestionId(question);
    send(message);
  }

  // Sends a call on the capability `target` leads to; `fill` sets its
  // parameters, and the capability table gets `caps` distinct
  // capabilities of this client (senderHosted 0, 1, ...).
  void call(uint32_t question,
            const std::function<void(capnp::rpc::MessageTarget::Builder)>& target,
            uint64_t interface_id, uint16_t method_id,
            const std::function<void(capnp::AnyPointer::Builder)>& fill, uint32_t caps = 0) {
    capnp::MallocMessageBuilder message;
    auto call = message.initRoot<capnp::rpc::Message>().initCall();
    call.setQuestionId(question);
    target(call.initTarget());
    call.setInterfaceId(interface_id);
    call.setMethodId(method_id);
    auto params = call.initParams();
    fill(params.getContent());
    auto table = params.initCapTable(caps);
    for (uint32_t i = 0; i < caps; ++i) table[i].setSenderHosted(i);
    send(message);
  }

  // Reads until the server returns `question`; false if the connection
  // closed first.
  bool awaitReturn(uint32_t question) {
    for (;;) {
      auto message = next();
      if (!message) return false;
      auto root = (*message)->getRoot<capnp::rpc::Message>();
      if (root.isReturn() && root.getReturn().getAnswerId() == question) return true;
    }
  }

  // Reads until the server closes the connection; false if it is still
  // open after kGuard.
  bool awaitClose() {
    while (next()) {
    }
    return !timed_out_;
  }

 private:
  // The next message; nothing once the connection is closed (or kGuard
  // passed: timed_out_).
  std::optional<kj::Own<capnp::MessageReader>> next() {
    std::optional<kj::Own<capnp::MessageReader>> result;
    auto failure = kj::runCatchingExceptions([&] {
      auto read = capnp::tryReadMessage(*stream_).then(
          [](kj::Maybe<kj::Own<capnp::MessageReader>>&& m) { return kj::mv(m); });
      auto guard = io_.provider->getTimer().afterDelay(kGuard).then(
          [this]() -> kj::Maybe<kj::Own<capnp::MessageReader>> {
            timed_out_ = true;
            return nullptr;
          });
      KJ_IF_MAYBE (m, read.exclusiveJoin(kj::mv(guard)).wait(io_.waitScope)) {
        result = kj::mv(*m);
      }
    });
    KJ_IF_MAYBE (e, failure) {
      // A reset connection is a closed one.
      EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED) << e->getDescription().cStr();
    }
    return result;
  }

  kj::AsyncIoContext& io_;
  kj::Own<kj::AsyncIoStream> stream_;
  bool timed_out_ = false;
};

void onBootstrap(capnp::rpc::MessageTarget::Builder target) {
  target.initPromisedAnswer().setQuestionId(0);
}

// The Tenant capability in the results of the login call `question`.
std::function<void(capnp::rpc::MessageTarget::Builder)> onLoggedInTenant(uint32_t question) {
  return [question](capnp::rpc::MessageTarget::Builder target) {
    auto answer = target.initPromisedAnswer();
    answer.setQuestionId(question);
    auto ops = answer.initTransform(2);
    ops[0].setGetPointerField(0);  // LoginResults.result
    ops[1].setGetPointerField(0);  // LoginResult.tenant
  };
}

void noParams(capnp::AnyPointer::Builder content) { content.initAsAnyStruct(0, 0); }

class ConnectionLimitsTest : public ::testing::Test {
 protected:
  ~ConnectionLimitsTest() noexcept override {}

  void startServer(std::vector<std::string> extra) {
    fs::path tenants = dir_.path() / "tenants.conf";
    std::ofstream(tenants) << "[alpha]\ntoken = " << kToken << "\n";
    for (const char* arg : {"--backend", "emulated", "--workers", "1", "--log-level", "debug"})
      extra.push_back(arg);
    server_.emplace(SANDPOOLD_BIN, dir_.path() / "data", tenants, extra);
  }

  kj::Own<client::Connection> connect(const std::string& address = "") {
    return client::Connection::connect(io_, address.empty() ? server_->tcpAddress() : address)
        .wait(ws_);
  }

  rpc::Tenant::Client login(client::Connection& conn) { return conn.login(kToken).wait(ws_); }

  // Whether `tenant` still gets its calls answered: upload a guest, call it.
  void expectServed(rpc::Tenant::Client& tenant) {
    std::ifstream in(GUEST_ADD, std::ios::binary);
    std::vector<uint8_t> elf((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
    auto upload = tenant.uploadRequest();
    upload.setName("add");
    upload.setElf(kj::arrayPtr(elf.data(), elf.size()));
    upload.setReplace(true);
    ASSERT_TRUE(upload.send().wait(ws_).getResult().isGuest());
    auto call = tenant.callRequest();
    call.setGuest("add");
    call.setFunction("add");
    auto args = call.initArgs(2);
    args[0].setI32(40);
    args[1].setI32(2);
    auto result = call.send().wait(ws_).getResult();
    ASSERT_TRUE(result.isOk());
    EXPECT_EQ(result.getOk().getValue().getI32(), 42);
  }

  // A raw connection that logged in as question 1 (after bootstrap 0).
  std::unique_ptr<RawRpcClient> rawLoggedIn() {
    auto raw = std::make_unique<RawRpcClient>(io_, server_->tcpAddress());
    raw->bootstrap(0);
    raw->call(1, onBootstrap, capnp::typeId<rpc::Sandpool>(), 2,
              [](capnp::AnyPointer::Builder content) {
                content.initAs<rpc::Sandpool::LoginParams>().setToken(kToken);
              });
    EXPECT_TRUE(raw->awaitReturn(1));
    return raw;
  }

  TempDir dir_;
  kj::AsyncIoContext io_ = kj::setupAsyncIo();
  kj::WaitScope& ws_ = io_.waitScope;
  std::optional<ServerProcess> server_;
};

TEST_F(ConnectionLimitsTest, HelpListsTheConnectionFlagsWithTheirDefaults) {
  ChildProcess help(SANDPOOLD_BIN, {"--help"});
  ASSERT_EQ(help.wait(60s), 0);
  std::string text = help.output();
  for (const char* flag :
       {"--rpc-login-message-limit-kib KIB (=64)", "--rpc-max-caps-per-message N (=64)",
        "--rpc-max-imports N (=256)", "--max-connections N (=1024)",
        "--max-connections-per-peer N (=128)", "--login-timeout-ms MS (=10000)",
        "--connection-idle-timeout-ms MS (=300000)"}) {
    EXPECT_NE(text.find(flag), std::string::npos) << flag << " in\n" << text;
  }
}

TEST_F(ConnectionLimitsTest, CapabilityFloodBeforeLoginIsRefusedAndCostsNoMemory) {
  startServer({});
  auto tenant_conn = connect();
  auto tenant = login(*tenant_conn);
  expectServed(tenant);
  MemoryWatch memory(server_->process().pid());

  // Three connections, as in the report; each sends the flood as its first
  // call on the bootstrap capability (ping).
  for (int attempt = 0; attempt < 3; ++attempt) {
    RawRpcClient attacker(io_, server_->tcpAddress());
    attacker.bootstrap(0);
    attacker.call(1, onBootstrap, capnp::typeId<rpc::Sandpool>(), 0, noParams, kFloodCaps);
    EXPECT_TRUE(attacker.awaitClose()) << "attempt " << attempt;
  }
  EXPECT_TRUE(server_->process().waitForLine(
      "logged_in=false error=\"expected total <= options.traversalLimitInWords", 60s))
      << server_->process().output();

  expectServed(tenant);
  auto fresh_conn = connect();
  auto fresh = login(*fresh_conn);
  expectServed(fresh);
  memory.expectGrewLessThan(32ull << 20);
}

TEST_F(ConnectionLimitsTest, CapabilityFloodAfterLoginIsRefusedAndCostsNoMemory) {
  startServer({});
  auto tenant_conn = connect();
  auto tenant = login(*tenant_conn);
  expectServed(tenant);
  MemoryWatch memory(server_->process().pid());

  for (int attempt = 0; attempt < 3; ++attempt) {
    auto attacker = rawLoggedIn();
    // Tenant.info() on the tenant of the login, with the flood.
    attacker->call(2, onLoggedInTenant(1), capnp::typeId<rpc::Tenant>(), 0, noParams, kFloodCaps);
    EXPECT_TRUE(attacker->awaitClose()) << "attempt " << attempt;
  }
  EXPECT_TRUE(server_->process().waitForLine(
      "logged_in=true reason=\"1000000 capabilities in one message, at most 64\"", 60s))
      << server_->process().output();

  expectServed(tenant);
  memory.expectGrewLessThan(32ull << 20);
}

TEST_F(ConnectionLimitsTest, CapabilitiesLentPerConnectionAreBounded) {
  startServer({"--rpc-max-imports", "4"});
  auto within = rawLoggedIn();
  within->call(2, onLoggedInTenant(1), capnp::typeId<rpc::Tenant>(), 0, noParams, 4);
  EXPECT_TRUE(within->awaitReturn(2));

  auto beyond = rawLoggedIn();
  beyond->call(2, onLoggedInTenant(1), capnp::typeId<rpc::Tenant>(), 0, noParams, 5);
  EXPECT_TRUE(beyond->awaitClose());
  EXPECT_TRUE(server_->process().waitForLine(
      "reason=\"more than 4 capabilities lent to the server at once\"", 60s))
      << server_->process().output();
}

TEST_F(ConnectionLimitsTest, FullServerMakesRoomForATenantByClosingAConnectionThatNeverLoggedIn) {
  startServer({"--max-connections", "8"});
  std::vector<std::unique_ptr<RawRpcClient>> idle;
  for (int i = 0; i < 8; ++i) {
    idle.push_back(std::make_unique<RawRpcClient>(
        io_, i % 2 == 0 ? server_->tcpAddress() : server_->unixAddress()));
    idle.back()->bootstrap(0);
    // Answered: the server holds the connection.
    ASSERT_TRUE(idle.back()->awaitReturn(0)) << i;
  }
  auto conn = connect();
  auto tenant = login(*conn);
  expectServed(tenant);
  // The oldest connection that never logged in made the room.
  EXPECT_TRUE(idle.front()->awaitClose());
  EXPECT_TRUE(server_->process().waitForLine("reason=evicted connections=8", 60s));
}

TEST_F(ConnectionLimitsTest, ConnectionThatNeverLogsInIsClosedAtTheLoginDeadline) {
  // The tenant below must log in within the deadline even on a loaded
  // machine: 3 s, against the silent connection that never does.
  startServer({"--login-timeout-ms", "3000"});
  auto tenant_conn = connect();
  auto tenant = login(*tenant_conn);
  RawRpcClient silent(io_, server_->unixAddress());
  silent.bootstrap(0);
  ASSERT_TRUE(silent.awaitReturn(0));
  EXPECT_TRUE(silent.awaitClose());
  EXPECT_TRUE(server_->process().waitForLine("reason=login_deadline", 60s));
  // The tenant that logged in before the deadline is served after it.
  expectServed(tenant);
}

TEST_F(ConnectionLimitsTest, IdleConnectionIsClosed) {
  startServer({"--connection-idle-timeout-ms", "300"});
  auto raw = rawLoggedIn();
  EXPECT_TRUE(raw->awaitClose());
  EXPECT_TRUE(server_->process().waitForLine("reason=idle", 60s));
}

TEST_F(ConnectionLimitsTest, PeerLimitRefusesTheNextConnectionFromThatPeer) {
  startServer({"--max-connections-per-peer", "2"});
  auto first = connect();
  auto second = connect();
  first->sandpool().pingRequest().send().wait(ws_);
  second->sandpool().pingRequest().send().wait(ws_);
  auto third = connect();
  kj::Maybe<kj::Exception> failure =
      kj::runCatchingExceptions([&] { third->sandpool().pingRequest().send().wait(ws_); });
  KJ_IF_MAYBE (e, failure) {
    EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED) << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "a third connection from the same address was served";
  }
  EXPECT_TRUE(
      server_->process().waitForLine("reason=\"2 connections from this peer already\"", 60s));
  // The Unix socket counts its peers by uid: this process has none there yet.
  auto local = connect(server_->unixAddress());
  auto tenant = login(*local);
  expectServed(tenant);
}

}  // namespace
}  // namespace sandpool
