#include "server/rpc_codec.h"

#include <algorithm>
#include <chrono>

#include <capnp/schema.h>

#include "common/untrusted_text.h"

namespace sandpool::server {

namespace {

uint64_t ns(std::chrono::nanoseconds d) {
  return static_cast<uint64_t>(std::max<int64_t>(d.count(), 0));
}

// FailureCode is numbered as the wire's ErrorCode, so that the registry's
// log lines and the metrics name the code a client sees.
constexpr bool sameCode(FailureCode code, rpc::ErrorCode wire) {
  return static_cast<uint16_t>(code) == static_cast<uint16_t>(wire);
}
static_assert(sameCode(FailureCode::kInternal, rpc::ErrorCode::INTERNAL));
static_assert(sameCode(FailureCode::kUnauthenticated, rpc::ErrorCode::UNAUTHENTICATED));
static_assert(sameCode(FailureCode::kInvalidArgument, rpc::ErrorCode::INVALID_ARGUMENT));
static_assert(sameCode(FailureCode::kInvalidGuest, rpc::ErrorCode::INVALID_GUEST));
static_assert(sameCode(FailureCode::kTooLarge, rpc::ErrorCode::TOO_LARGE));
static_assert(sameCode(FailureCode::kGuestExists, rpc::ErrorCode::GUEST_EXISTS));
static_assert(sameCode(FailureCode::kUnknownGuest, rpc::ErrorCode::UNKNOWN_GUEST));
static_assert(sameCode(FailureCode::kUnknownFunction, rpc::ErrorCode::UNKNOWN_FUNCTION));
static_assert(sameCode(FailureCode::kBadArguments, rpc::ErrorCode::BAD_ARGUMENTS));
static_assert(sameCode(FailureCode::kGuestAbort, rpc::ErrorCode::GUEST_ABORT));
static_assert(sameCode(FailureCode::kGuestFault, rpc::ErrorCode::GUEST_FAULT));
static_assert(sameCode(FailureCode::kTimeout, rpc::ErrorCode::TIMEOUT));
static_assert(sameCode(FailureCode::kBadHostCall, rpc::ErrorCode::BAD_HOST_CALL));
static_assert(sameCode(FailureCode::kOutOfMemory, rpc::ErrorCode::OUT_OF_MEMORY));
static_assert(sameCode(FailureCode::kLimitExceeded, rpc::ErrorCode::LIMIT_EXCEEDED));
static_assert(sameCode(FailureCode::kOverloaded, rpc::ErrorCode::OVERLOADED));
static_assert(sameCode(FailureCode::kQuotaExceeded, rpc::ErrorCode::QUOTA_EXCEEDED));
static_assert(sameCode(FailureCode::kShuttingDown, rpc::ErrorCode::SHUTTING_DOWN));
void toRpc(const pool::CallOutcome& o, std::chrono::nanoseconds total, rpc::Timing::Builder t) {
  t.setQueueNs(ns(o.queue_time));
  t.setRunNs(ns(o.call.stats.run_time));
  t.setResetNs(ns(o.call.stats.reset_time));
  t.setTotalNs(ns(total));
  t.setHostCalls(o.call.stats.host_calls);
  t.setPagesRestored(o.call.stats.pages_restored);
  t.setColdStart(o.cold_start);
}

}  // namespace

void toRpc(const vm::FunctionSignature& sig, rpc::FunctionSignature::Builder out) {
  out.setName(sig.name);
  auto params = out.initParams(static_cast<unsigned>(sig.params.size()));
  for (size_t i = 0; i < sig.params.size(); ++i)
    params.set(static_cast<unsigned>(i), rpc::toRpc(sig.params[i]));
  out.setResult(rpc::toRpc(sig.result));
}

rpc::ErrorCode errorCode(vm::ErrorKind kind) {
  return static_cast<rpc::ErrorCode>(failureCode(kind));
}

rpc::ErrorCode errorCode(pool::RefusalKind kind) {
  return static_cast<rpc::ErrorCode>(failureCode(kind));
}

std::string errorCodeName(FailureCode code) {
  auto enumerants = capnp::Schema::from<rpc::ErrorCode>().getEnumerants();
  return enumerants[static_cast<uint16_t>(code)].getProto().getName().cStr();
}

void setError(rpc::Error::Builder out, rpc::ErrorCode code, kj::StringPtr message) {
  out.setCode(code);
  // Messages quote names, guest aborts and ELF contents: escaped and bounded
  // like log fields (common/untrusted_text.h).
  out.setMessage(ptr(text::escapeUntrusted(std::string_view(message.begin(), message.size()))));
}

void toRpc(const vm::Error& error, rpc::Error::Builder out) {
  rpc::ErrorCode code = errorCode(error.kind);
  if (code == rpc::ErrorCode::INTERNAL) {
    setError(out, code, "internal error in the server; its log has the details");
  } else {
    setError(out, code, kj::StringPtr(error.message.c_str(), error.message.size()));
  }
}

}  // namespace sandpool::server

namespace sandpool::server {

void toRpc(const Failure& failure, rpc::Error::Builder out) {
  setError(out, static_cast<rpc::ErrorCode>(failure.code), ptr(failure.message));
}

void toRpc(const std::string& name, const GuestEntry& guest, rpc::GuestInfo::Builder out) {
  out.setName(ptr(name));
  out.setSha256(ptr(guest.sha256));
  out.setSize(guest.size);
  const auto& exports = guest.pool->snapshot().exports();
  auto list = out.initExports(static_cast<unsigned>(exports.size()));
  for (size_t i = 0; i < exports.size(); ++i) toRpc(exports[i], list[static_cast<unsigned>(i)]);
  toRpc(guest.pool->settings(), out.initSettings());
  toRpc(guest.pool->snapshot().config(), out.initVmSettings());
}

void toRpc(const vm::VmConfig& config, rpc::VmSettings::Builder out) {
  const VmSettings settings = vmSettingsOf(config);
  out.setMemoryBytes(settings.memory_bytes);
  out.setStackBytes(settings.stack_bytes);
  out.setInputBytes(settings.input_bytes);
  out.setOutputBytes(settings.output_bytes);
  out.setMaxHostCalls(settings.max_host_calls);
}

VmSettings fromRpc(rpc::VmSettings::Reader settings) {
  return VmSettings{settings.getMemoryBytes(), settings.getStackBytes(), settings.getInputBytes(),
                    settings.getOutputBytes(), settings.getMaxHostCalls()};
}

void toRpc(const pool::PoolSettings& settings, rpc::PoolSettings::Builder out) {
  out.setMinWarm(settings.min_warm);
  out.setMaxVms(settings.max_vms);
}

void toRpc(const pool::Quota& quota, rpc::Quota::Builder out) {
  out.setMaxVms(quota.max_vms);
  out.setMaxGuests(quota.max_guests);
  out.setMaxMemoryBytes(quota.max_memory_bytes);
  out.setMaxConcurrentCalls(quota.max_concurrent_calls);
  out.setQueueLength(quota.queue_length);
}

capnp::MessageSize replySize(const pool::CallOutcome& o) {
  size_t bytes = o.call.output.size();
  if (o.refusal) {
    bytes += o.refusal->message.size();
  } else if (o.call.result.ok()) {
    bytes += vm::encodedSize(o.call.result.value());
  } else {
    bytes += o.call.result.error().message.size();
  }
  // The fixed part: result union, value or error, timing, pointers.
  return {64 + bytes / sizeof(capnp::word), 0};
}

void toRpc(const FinishedCall& finished, rpc::CallResult::Builder out) {
  const pool::CallOutcome& o = finished.outcome;
  if (o.refusal) {
    auto error = out.initError();
    rpc::ErrorCode code = errorCode(o.refusal->kind);
    if (code == rpc::ErrorCode::INTERNAL) {
      setError(error.initError(), code, "internal error in the server; its log has the details");
    } else {
      setError(error.initError(), code, ptr(o.refusal->message));
    }
    toRpc(o, finished.total, error.initTiming());
    return;
  }
  if (o.call.result.ok()) {
    auto ok = out.initOk();
    toRpc(o.call.result.value(), ok.initValue());
    ok.setOutput(ptr(o.call.output));
    ok.setOutputTruncated(o.call.output_truncated);
    toRpc(o, finished.total, ok.initTiming());
    return;
  }
  auto error = out.initError();
  toRpc(o.call.result.error(), error.initError());
  error.setOutput(ptr(o.call.output));
  error.setOutputTruncated(o.call.output_truncated);
  toRpc(o, finished.total, error.initTiming());
}

void RpcStatsWriter::tenant(const TenantConfig&, const pool::TenantCounters& counters,
                            size_t guests) {
  out_.setQueued(counters.queued);
  out_.setRunning(counters.running);
  out_.setOverloaded(counters.overloaded);
  guests_ = out_.initGuests(static_cast<unsigned>(guests));
}

void RpcStatsWriter::guest(const std::string& name, const pool::GuestStats& s) {
  KJ_IF_MAYBE (list, guests_) {
    auto g = (*list)[next_++];
    g.setName(ptr(name));
    g.setWarm(s.warm);
    g.setBusy(s.busy);
    g.setWaiting(s.waiting);
    g.setCreated(s.created);
    g.setReset(s.reset);
    g.setDiscarded(s.discarded);
    g.setFailed(s.failed);
    g.setTimeouts(s.timeouts);
    g.setCalls(s.calls);
    g.setSnapshotBytes(s.snapshot_bytes);
    auto h = g.initLatency();
    const auto& bounds = pool::LatencyHistogram::kBoundsUs;
    auto b = h.initBoundsUs(static_cast<unsigned>(bounds.size() - 1));
    for (size_t k = 0; k + 1 < bounds.size(); ++k) b.set(static_cast<unsigned>(k), bounds[k]);
    auto c = h.initCounts(static_cast<unsigned>(s.latency.counts.size()));
    for (size_t k = 0; k < s.latency.counts.size(); ++k)
      c.set(static_cast<unsigned>(k), s.latency.counts[k]);
    h.setP50Us(s.latency.quantileUs(0.5));
    h.setP99Us(s.latency.quantileUs(0.99));
  }
}

}  // namespace sandpool::server
