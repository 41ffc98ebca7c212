#include "clients/cpp/client.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

#include <capnp/schema.h>
#include <fmt/format.h>

#include "common/untrusted_text.h"
#include "rpc-schema/value_codec.h"
#include "vm/value_text.h"

namespace sandpool::client {

std::string toKjAddress(const std::string& address) {
  if (address.rfind("tcp:", 0) == 0) return address.substr(4);
  return address;
}

kj::Promise<kj::Own<Connection>> Connection::connect(kj::AsyncIoContext& io,
                                                     const std::string& address) {
  return io.provider->getNetwork()
      .parseAddress(toKjAddress(address))
      .then([](kj::Own<kj::NetworkAddress> addr) { return addr->connect().attach(kj::mv(addr)); })
      .then([](kj::Own<kj::AsyncIoStream> stream) { return kj::heap<Connection>(kj::mv(stream)); });
}

namespace {

rpc::Sandpool::Client serverBootstrap(capnp::RpcSystem<capnp::rpc::twoparty::VatId>& rpc) {
  capnp::MallocMessageBuilder message(16);
  auto server = message.getRoot<capnp::rpc::twoparty::VatId>();
  server.setSide(capnp::rpc::twoparty::Side::SERVER);
  return rpc.bootstrap(server).castAs<rpc::Sandpool>();
}

}  // namespace

Connection::Connection(kj::Own<kj::AsyncIoStream> stream)
    : stream_(kj::mv(stream)),
      messages_(*stream_),
      network_(messages_, capnp::rpc::twoparty::Side::CLIENT),
      rpc_(capnp::makeRpcClient(network_)),
      sandpool_(serverBootstrap(rpc_)) {}

kj::Promise<rpc::Tenant::Client> Connection::login(const std::string& token) {
  auto request = sandpool_.loginRequest();
  request.setToken(token);
  return request.send().then([](capnp::Response<rpc::Sandpool::LoginResults>&& response) {
    auto result = response.getResult();
    if (result.isError()) {
      KJ_FAIL_REQUIRE("login refused", describe(result.getError()).c_str());
    }
    return result.getTenant();
  });
}

namespace {

template <typename Enum>
std::string enumName(Enum value) {
  auto enumerants = capnp::Schema::from<Enum>().getEnumerants();
  auto index = static_cast<uint16_t>(value);
  if (index < enumerants.size()) return enumerants[index].getProto().getName().cStr();
  return fmt::format("unknown({})", index);
}

// Appended rather than concatenated: GCC 12 warns with a false positive on
// "\"" + std::string + "\"" once this is inlined (-Wrestrict).
std::string quote(kj::StringPtr text) {
  std::string quoted = "\"";
  quoted.append(text::escapeUntrusted(std::string_view(text.begin(), text.size()),
                                      text::Escape::kQuoted, text::kNoLimit));
  quoted.push_back('"');
  return quoted;
}

}  // namespace

std::string errorCodeName(rpc::ErrorCode code) { return enumName(code); }
std::string valueTypeName(rpc::ValueType type) { return enumName(type); }

std::string describe(rpc::Error::Reader error) {
  return fmt::format("{}: {}", errorCodeName(error.getCode()), error.getMessage().cStr());
}

std::optional<std::string> parseValue(rpc::ValueType type, const std::string& text,
                                      rpc::Value::Builder out) {
  auto value = vm::parseValue(rpc::fromRpc(type), text);
  if (!value) return value.error().message;
  rpc::toRpc(*value, out);
  return std::nullopt;
}

std::string formatValue(rpc::Value::Reader value) {
  if (value.isString()) return quote(value.getString());
  return vm::formatValue(rpc::fromRpc(value));
}

std::string formatSignature(rpc::FunctionSignature::Reader sig) {
  std::string s = std::string(sig.getName().cStr()) + "(";
  bool first = true;
  for (auto p : sig.getParams()) {
    if (!first) s += ", ";
    first = false;
    s += valueTypeName(p);
  }
  return s + ") -> " + valueTypeName(sig.getResult());
}

kj::Promise<void> KvHostFunctions::call(CallContext context) {
  ++calls_;
  auto params = context.getParams();
  auto result = context.getResults().initResult();
  std::string name = params.getName().cStr();
  if (name != "kv_get") {
    result.setError(fmt::format("this client provides no host function '{}'", name));
    return kj::READY_NOW;
  }
  auto args = params.getArgs();
  if (args.size() != 1 || !args[0].isString()) {
    result.setError("kv_get takes one string argument");
    return kj::READY_NOW;
  }
  std::string key = args[0].getString().cStr();
  auto it = values_.find(key);
  if (it == values_.end()) {
    result.setError(fmt::format("no key '{}'", key));
    return kj::READY_NOW;
  }
  result.initValue().setString(it->second);
  return kj::READY_NOW;
}

std::chrono::nanoseconds BenchResult::percentile(double p) const {
  if (latencies.empty()) return std::chrono::nanoseconds(0);
  size_t index = static_cast<size_t>(std::ceil(p * static_cast<double>(latencies.size())));
  index = std::clamp<size_t>(index, 1, latencies.size()) - 1;
  return latencies[index];
}

double BenchResult::callsPerSecond() const {
  if (elapsed.count() <= 0) return 0;
  return static_cast<double>(calls) * 1e9 / static_cast<double>(elapsed.count());
}

double medianUs(std::vector<uint64_t>& ns) {
  if (ns.empty()) return 0;
  std::nth_element(ns.begin(), ns.begin() + static_cast<long>(ns.size() / 2), ns.end());
  return static_cast<double>(ns[ns.size() / 2]) / 1000.0;
}

BenchResult runBench(kj::WaitScope& wait_scope, std::function<kj::Promise<bool>()> op,
                     unsigned concurrency, uint64_t calls, std::chrono::microseconds poll) {
  struct State {
    std::function<kj::Promise<bool>()> op;
    uint64_t started = 0;
    uint64_t target = 0;
    BenchResult result;
    kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> next_completion;  // wakes a sleeping poller
  };
  State state{std::move(op), 0, calls, {}, nullptr};
  state.result.latencies.reserve(calls);

  // One lane keeps one operation in flight and starts the next when it ends.
  std::function<kj::Promise<void>()> lane = [&state, &lane]() -> kj::Promise<void> {
    if (state.started >= state.target) return kj::READY_NOW;
    ++state.started;
    auto begin = std::chrono::steady_clock::now();
    return state.op().then([&state, &lane, begin](bool ok) {
      state.result.latencies.push_back(std::chrono::steady_clock::now() - begin);
      ++state.result.calls;
      if (!ok) ++state.result.errors;
      KJ_IF_MAYBE (waiter, state.next_completion) {
        (*waiter)->fulfill();
        state.next_completion = nullptr;
      }
      return lane();
    });
  };
  auto begin = std::chrono::steady_clock::now();
  kj::Vector<kj::Promise<void>> lanes;
  for (unsigned i = 0; i < std::max(1u, concurrency); ++i) lanes.add(lane());
  auto all = kj::joinPromises(lanes.releaseAsArray()).fork();
  bool settled = false;  // every lane ended, or one failed
  auto settle =
      all.addBranch()
          .then([&settled] { settled = true; }, [&settled](kj::Exception&&) { settled = true; })
          .eagerlyEvaluate(nullptr);
  // With several calls out, replies come every few microseconds: poll for
  // them, yielding the CPU on every idle turn, rather than sleep in epoll
  // and be woken once per reply (each wake-up costs the server's writing
  // thread and this one more than the reply itself; docs/performance.md).
  // With one call out the reply is a whole round trip away, and the cores
  // are better left to the server.
  auto out = [&state] { return state.started - state.result.calls; };
  while (!settled && poll.count() > 0 && concurrency > 1) {
    auto deadline = std::chrono::steady_clock::now() + poll;
    uint64_t seen = state.result.calls;
    while (!settled && out() > 1 && std::chrono::steady_clock::now() < deadline) {
      wait_scope.poll();
      if (state.result.calls != seen) {
        seen = state.result.calls;
        deadline = std::chrono::steady_clock::now() + poll;
      } else {
        std::this_thread::yield();
      }
    }
    if (settled) break;
    auto next = kj::newPromiseAndFulfiller<void>();
    state.next_completion = kj::mv(next.fulfiller);
    next.promise.exclusiveJoin(all.addBranch()).wait(wait_scope);
  }
  all.addBranch().wait(wait_scope);
  state.result.elapsed = std::chrono::steady_clock::now() - begin;
  std::sort(state.result.latencies.begin(), state.result.latencies.end());
  return std::move(state.result);
}

}  // namespace sandpool::client
