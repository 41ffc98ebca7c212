#include "clients/cpp/client.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <sstream>
#include <thread>

#include <capnp/schema.h>

#include "common/untrusted_text.h"

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
  return "unknown(" + std::to_string(index) + ")";
}

template <typename T>
bool parseNumber(const std::string& text, T& out) {
  if constexpr (std::is_floating_point_v<T>) {
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE) return false;
    out = static_cast<T>(v);
    return true;
  } else {
    int base = 10;
    const char* begin = text.data();
    const char* end = text.data() + text.size();
    if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
      base = 16;
      begin += 2;
    }
    auto [ptr, ec] = std::from_chars(begin, end, out, base);
    return !text.empty() && ec == std::errc() && ptr == end;
  }
}

std::string quote(kj::StringPtr text) {
  return "\"" +
         text::escapeUntrusted(std::string_view(text.begin(), text.size()), text::Escape::kQuoted,
                               text::kNoLimit) +
         "\"";
}

}  // namespace

std::string errorCodeName(rpc::ErrorCode code) { return enumName(code); }
std::string valueTypeName(rpc::ValueType type) { return enumName(type); }

std::string describe(rpc::Error::Reader error) {
  return errorCodeName(error.getCode()) + ": " + error.getMessage().cStr();
}

std::optional<std::string> parseValue(rpc::ValueType type, const std::string& text,
                                      rpc::Value::Builder out) {
  auto bad = [&] { return "'" + text + "' is not a valid " + valueTypeName(type); };
  switch (type) {
    case rpc::ValueType::VOID: out.setVoid(); return std::nullopt;
    case rpc::ValueType::I32: {
      int32_t v;
      if (!parseNumber(text, v)) return bad();
      out.setI32(v);
      return std::nullopt;
    }
    case rpc::ValueType::I64: {
      int64_t v;
      if (!parseNumber(text, v)) return bad();
      out.setI64(v);
      return std::nullopt;
    }
    case rpc::ValueType::U32: {
      uint32_t v;
      if (!parseNumber(text, v)) return bad();
      out.setU32(v);
      return std::nullopt;
    }
    case rpc::ValueType::U64: {
      uint64_t v;
      if (!parseNumber(text, v)) return bad();
      out.setU64(v);
      return std::nullopt;
    }
    case rpc::ValueType::F32: {
      float v;
      if (!parseNumber(text, v)) return bad();
      out.setF32(v);
      return std::nullopt;
    }
    case rpc::ValueType::F64: {
      double v;
      if (!parseNumber(text, v)) return bad();
      out.setF64(v);
      return std::nullopt;
    }
    case rpc::ValueType::BOOL:
      if (text == "true" || text == "1")
        out.setBool(true);
      else if (text == "false" || text == "0")
        out.setBool(false);
      else
        return bad();
      return std::nullopt;
    case rpc::ValueType::STRING: out.setString(text); return std::nullopt;
    case rpc::ValueType::BYTES: {
      std::string hex = text.rfind("0x", 0) == 0 ? text.substr(2) : text;
      if (hex.size() % 2 != 0) return bad();
      auto data = out.initBytes(static_cast<unsigned>(hex.size() / 2));
      for (size_t i = 0; i < data.size(); ++i) {
        uint8_t b;
        auto [ptr, ec] = std::from_chars(hex.data() + 2 * i, hex.data() + 2 * i + 2, b, 16);
        if (ec != std::errc() || ptr != hex.data() + 2 * i + 2) return bad();
        data[i] = b;
      }
      return std::nullopt;
    }
  }
  return "unsupported type " + valueTypeName(type);
}

std::string formatValue(rpc::Value::Reader value) {
  std::ostringstream out;
  switch (value.which()) {
    case rpc::Value::VOID: return "(void)";
    case rpc::Value::I32: return std::to_string(value.getI32());
    case rpc::Value::I64: return std::to_string(value.getI64());
    case rpc::Value::U32: return std::to_string(value.getU32());
    case rpc::Value::U64: return std::to_string(value.getU64());
    case rpc::Value::F32: out << value.getF32(); return out.str();
    case rpc::Value::F64: out << value.getF64(); return out.str();
    case rpc::Value::BOOL: return value.getBool() ? "true" : "false";
    case rpc::Value::STRING: return quote(value.getString());
    case rpc::Value::BYTES: {
      static constexpr char kDigits[] = "0123456789abcdef";
      std::string s = "0x";
      for (uint8_t b : value.getBytes()) {
        s.push_back(kDigits[b >> 4]);
        s.push_back(kDigits[b & 15]);
      }
      return s;
    }
  }
  return "(unknown value)";
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
    result.setError("this client provides no host function '" + name + "'");
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
    result.setError("no key '" + key + "'");
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
