// The C++ client library on sandpool.capnp: connecting over TCP or a Unix
// socket, typed values from and to text, readable errors, a key-value host
// function provider, and the load driver behind `sandpool bench`.
//
// Threads: everything runs on the caller's KJ event loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "rpc-schema/buffered_message_stream.h"
#include "rpc-schema/sandpool.capnp.h"

namespace sandpool::client {

// "HOST:PORT", "tcp:HOST:PORT" or "unix:PATH".
std::string toKjAddress(const std::string& address);

// One RPC connection to sandpoold.
class Connection {
 public:
  static kj::Promise<kj::Own<Connection>> connect(kj::AsyncIoContext& io,
                                                  const std::string& address);
  explicit Connection(kj::Own<kj::AsyncIoStream> stream);

  rpc::Sandpool::Client& sandpool() { return sandpool_; }
  // Logs in; throws kj::Exception with the server's message if refused.
  kj::Promise<rpc::Tenant::Client> login(const std::string& token);

 private:
  kj::Own<kj::AsyncIoStream> stream_;
  wire::BufferedMessageStream messages_;
  capnp::TwoPartyVatNetwork network_;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc_;
  rpc::Sandpool::Client sandpool_;
};

// "unauthenticated", "timeout", ... as named in the schema.
std::string errorCodeName(rpc::ErrorCode code);
std::string describe(rpc::Error::Reader error);  // "timeout: call ran past ..."
std::string valueTypeName(rpc::ValueType type);

// Parses `text` in the values' text form (vm/value_text.h) as a value of
// `type` into `out`; returns an error message on failure ("'x' is not a
// valid i32").
std::optional<std::string> parseValue(rpc::ValueType type, const std::string& text,
                                      rpc::Value::Builder out);
// The values' text form (vm/value_text.h), but strings quoted and escaped
// for a terminal (common/untrusted_text.h): 42, -1.5, true, "text", 0x00ff.
std::string formatValue(rpc::Value::Reader value);
std::string formatSignature(rpc::FunctionSignature::Reader sig);

// Host functions served by this client: kv_get(string key) -> string from a
// fixed map; an unknown key fails the host call with "no key '<key>'".
class KvHostFunctions final : public rpc::HostFunctions::Server {
 public:
  explicit KvHostFunctions(std::map<std::string, std::string> values)
      : values_(std::move(values)) {}
  uint64_t callCount() const { return calls_; }

 protected:
  kj::Promise<void> call(CallContext context) override;

 private:
  std::map<std::string, std::string> values_;
  uint64_t calls_ = 0;
};

// The median of nanosecond samples, in microseconds (0 for none); reorders
// `ns`.
double medianUs(std::vector<uint64_t>& ns);

// How long runBench polls without a reply before it sleeps until the next.
inline constexpr std::chrono::microseconds kDefaultBenchPoll{1000};

struct BenchResult {
  uint64_t calls = 0;
  uint64_t errors = 0;
  std::chrono::nanoseconds elapsed{0};
  std::vector<std::chrono::nanoseconds> latencies;  // sorted

  std::chrono::nanoseconds percentile(double p) const;
  double callsPerSecond() const;
};

// Keeps `concurrency` operations in flight until `calls` have completed and
// measures each one's latency. `op` returns false for a failed call. While
// more than one operation is out, the event loop is polled for replies
// until `poll` passes without one, then sleeps until the next (0: always
// sleeps).
BenchResult runBench(kj::WaitScope& wait_scope, std::function<kj::Promise<bool>()> op,
                     unsigned concurrency, uint64_t calls,
                     std::chrono::microseconds poll = kDefaultBenchPoll);

}  // namespace sandpool::client
