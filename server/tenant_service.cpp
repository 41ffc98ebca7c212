#include "server/tenant_service.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include "common/untrusted_text.h"
#include "server/call_task.h"
#include "server/rpc_codec.h"
#include "server/service_context.h"
#include "wasm/translator.h"

namespace sandpool::server {

namespace {

uint64_t ns(std::chrono::nanoseconds d) { return static_cast<uint64_t>(std::max<int64_t>(d.count(), 0)); }

void fillGuestInfo(const std::string& name, const GuestEntry& entry, rpc::GuestInfo::Builder out) {
  out.setName(ptr(name));
  out.setSha256(ptr(entry.sha256));
  out.setSize(entry.size);
  const auto& exports = entry.pool->snapshot().exports();
  auto list = out.initExports(static_cast<unsigned>(exports.size()));
  for (size_t i = 0; i < exports.size(); ++i) toRpc(exports[i], list[static_cast<unsigned>(i)]);
  auto settings = entry.pool->settings();
  out.initSettings().setMinWarm(settings.min_warm);
  out.getSettings().setMaxVms(settings.max_vms);
}

void fillTiming(const pool::CallOutcome& o, std::chrono::nanoseconds total, rpc::Timing::Builder t) {
  t.setQueueNs(ns(o.queue_time));
  t.setRunNs(ns(o.call.stats.run_time));
  t.setResetNs(ns(o.call.stats.reset_time));
  t.setTotalNs(ns(total));
  t.setHostCalls(o.call.stats.host_calls);
  t.setPagesRestored(o.call.stats.pages_restored);
  t.setColdStart(o.cold_start);
}

struct UploadOutcome {
  std::optional<vm::Error> error;
  bool stored = false;  // validation passed and the file is durable
  std::shared_ptr<pool::GuestPool> pool;  // the new version, prewarmed
  std::string sha256;
  uint64_t size = 0;
};

// A size hint for a call's reply. Without one capnp starts every reply with
// an 8 KiB segment: a large allocation per call, which sends glibc's malloc
// down its slow path (consolidating the small chunks the call freed).
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

std::string describeName(const std::string& name) {
  return isValidName(name) ? name : std::string("(invalid name)");
}

void setNoSuchGuest(rpc::Error::Builder out, const std::string& name) {
  setError(out, rpc::ErrorCode::UNKNOWN_GUEST, ptr("no guest '" + describeName(name) + "'"));
}

// Runs a write to the guest store on the blocking pool; the promise holds
// its error, if any, on the KJ thread.
kj::Promise<std::optional<vm::Error>> writeStore(ServiceContext& ctx, std::function<vm::Expected<void>()> write) {
  return runBlocking<std::optional<vm::Error>>(
      ctx.mailbox, ctx.blocking, [write = std::move(write)]() -> std::optional<vm::Error> {
        auto written = write();
        if (!written) return written.takeError();
        return std::nullopt;
      });
}

// A call of `guest`'s function, for Tenant.call and Guest.call alike: both
// contexts' params carry function, args, hostFunctions and timeoutMs, and
// both results a `result :CallResult`.
template <typename Context>
kj::Promise<void> runCall(ServiceContext& ctx, TenantState& tenant, Context context, std::string guest) {
  pool::Clock::time_point received = pool::Clock::now();
  auto params = context.getParams();
  auto it = tenant.guests.find(guest);
  if (it == tenant.guests.end()) {
    auto error = context.getResults().initResult().initError();
    setNoSuchGuest(error.initError(), guest);
    return kj::READY_NOW;
  }
  auto paf = kj::newPromiseAndFulfiller<pool::CallOutcome>();
  auto* task = new RpcCallTask(ctx, kj::mv(paf.fulfiller));
  task->guest = it->second.pool;
  task->request.function = str(params.getFunction());
  auto args = params.getArgs();
  task->request.args.reserve(args.size());
  for (auto arg : args) task->request.args.push_back(fromRpc(arg));
  std::chrono::nanoseconds timeout = ctx.options.call_timeout;
  if (params.getTimeoutMs() != 0) {
    timeout = std::min<std::chrono::nanoseconds>(timeout, std::chrono::milliseconds(params.getTimeoutMs()));
  }
  task->received = received;
  task->deadline = received + timeout;
  task->request.timeout = timeout;
  if (params.hasHostFunctions()) task->setHostFunctions(params.getHostFunctions());
  if (ctx.shuttingDown()) {
    task->outcome.refusal = pool::Refusal{pool::RefusalKind::kShuttingDown, "the server is shutting down"};
    task->complete();
  } else {
    tenant.pool->submit(task);
  }
  ctx.beginWork();
  const std::string& tenant_name = tenant.config.name;
  return paf.promise
      .then([context, received, guest, &tenant_name](pool::CallOutcome&& o) mutable {
        auto total = pool::Clock::now() - received;
        auto result = context.getResults(replySize(o)).initResult();
        // The client chose the function's name: escaped (and quoted) in every
        // log line, and only when a line is written.
        auto function = [&context] { return text::escapeUntrusted(context.getParams().getFunction().cStr()); };
        if (o.refusal) {
          auto error = result.initError();
          rpc::ErrorCode code = errorCode(o.refusal->kind);
          if (code == rpc::ErrorCode::INTERNAL) {
            spdlog::error("event=call_refused tenant={} guest={} function=\"{}\" reason=\"{}\"", tenant_name,
                          guest, function(), text::escapeUntrusted(o.refusal->message));
            setError(error.initError(), code, "internal error in the server; its log has the details");
          } else {
            spdlog::debug("event=call_refused tenant={} guest={} function=\"{}\" reason=\"{}\"", tenant_name,
                          guest, function(), text::escapeUntrusted(o.refusal->message));
            setError(error.initError(), code, ptr(o.refusal->message));
          }
          fillTiming(o, total, error.initTiming());
          return;
        }
        if (o.call.result.ok()) {
          auto ok = result.initOk();
          toRpc(o.call.result.value(), ok.initValue());
          ok.setOutput(ptr(o.call.output));
          ok.setOutputTruncated(o.call.output_truncated);
          fillTiming(o, total, ok.initTiming());
          if (spdlog::should_log(spdlog::level::debug)) {
            spdlog::debug("event=call tenant={} guest={} function=\"{}\" total_us={} cold={}", tenant_name,
                          guest, function(), ns(total) / 1000, o.cold_start);
          }
          return;
        }
        const vm::Error& e = o.call.result.error();
        auto level = e.kind == vm::ErrorKind::kInternal || e.kind == vm::ErrorKind::kResetFailed
                         ? spdlog::level::err
                         : spdlog::level::info;
        spdlog::log(level, "event=call_failed tenant={} guest={} function=\"{}\" error=\"{}\"", tenant_name,
                    guest, function(), text::escapeUntrusted(e.describe()));
        auto error = result.initError();
        toRpc(e, error.initError());
        error.setOutput(ptr(o.call.output));
        error.setOutputTruncated(o.call.output_truncated);
        fillTiming(o, total, error.initTiming());
      })
      .attach(kj::defer([&ctx] { ctx.endWork(); }));
}

// Every method of a revoked capability fails with a DISCONNECTED exception,
// the way a capability behind a revoked membrane does; the client logs in
// again with the current token.
void requireLive(const TenantState& tenant, uint64_t generation) {
  if (tenant.generation != generation) {
    kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "this capability was revoked: the tenant's token was "
                                                       "rotated or the tenant removed; log in again"));
  }
}

// One guest of one tenant, by name (see Guest in the schema).
class GuestImpl final : public rpc::Guest::Server {
 public:
  GuestImpl(ServiceContext& ctx, TenantState& tenant, std::string name)
      : ctx_(ctx), tenant_(tenant), name_(std::move(name)), generation_(tenant.generation) {}

  DispatchCallResult dispatchCall(uint64_t interface_id, uint16_t method_id,
                                  capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    requireLive(tenant_, generation_);
    return rpc::Guest::Server::dispatchCall(interface_id, method_id, context);
  }

 protected:
  kj::Promise<void> call(CallContext context) override { return runCall(ctx_, tenant_, kj::mv(context), name_); }

  kj::Promise<void> info(InfoContext context) override {
    auto result = context.getResults().initResult();
    auto it = tenant_.guests.find(name_);
    if (it == tenant_.guests.end()) {
      setNoSuchGuest(result.initError(), name_);
    } else {
      fillGuestInfo(name_, it->second, result.initInfo());
    }
    return kj::READY_NOW;
  }

 private:
  ServiceContext& ctx_;
  TenantState& tenant_;
  const std::string name_;
  const uint64_t generation_;
};

class TenantImpl final : public rpc::Tenant::Server {
 public:
  TenantImpl(ServiceContext& ctx, TenantState& tenant)
      : ctx_(ctx), tenant_(tenant), generation_(tenant.generation) {}

  DispatchCallResult dispatchCall(uint64_t interface_id, uint16_t method_id,
                                  capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    requireLive(tenant_, generation_);
    return rpc::Tenant::Server::dispatchCall(interface_id, method_id, context);
  }

 protected:
  kj::Promise<void> info(InfoContext context) override {
    auto r = context.getResults();
    r.setName(ptr(tenant_.config.name));
    const pool::Quota& q = tenant_.config.quota;
    auto quota = r.initQuota();
    quota.setMaxVms(q.max_vms);
    quota.setMaxGuests(q.max_guests);
    quota.setMaxMemoryBytes(q.max_memory_bytes);
    quota.setMaxConcurrentCalls(q.max_concurrent_calls);
    quota.setQueueLength(q.queue_length);
    return kj::READY_NOW;
  }

  kj::Promise<void> upload(UploadContext context) override;
  kj::Promise<void> list(ListContext context) override {
    auto guests = context.getResults().initGuests(static_cast<unsigned>(tenant_.guests.size()));
    unsigned i = 0;
    for (const auto& [name, entry] : tenant_.guests) fillGuestInfo(name, entry, guests[i++]);
    return kj::READY_NOW;
  }
  kj::Promise<void> remove(RemoveContext context) override;
  kj::Promise<void> call(CallContext context) override;
  kj::Promise<void> stats(StatsContext context) override;
  kj::Promise<void> configure(ConfigureContext context) override;
  kj::Promise<void> guest(GuestContext context) override {
    std::string name = str(context.getParams().getName());
    auto result = context.getResults().initResult();
    if (tenant_.guests.count(name) == 0) {
      setNoSuchGuest(result.initError(), name);
      return kj::READY_NOW;
    }
    result.setGuest(kj::heap<GuestImpl>(ctx_, tenant_, name));
    return kj::READY_NOW;
  }

 private:
  const std::string& tenantName() const { return tenant_.config.name; }

  ServiceContext& ctx_;
  TenantState& tenant_;
  const uint64_t generation_;
};

kj::Promise<void> TenantImpl::upload(UploadContext context) {
  auto params = context.getParams();
  std::string name = str(params.getName());
  auto elf = params.getElf();
  auto refuse = [&](rpc::ErrorCode code, const std::string& message) -> kj::Promise<void> {
    spdlog::warn("event=upload_refused tenant={} guest={} code={} reason=\"{}\"", tenantName(),
                 isValidName(name) ? name : "(invalid)", static_cast<int>(code), message);
    setError(context.getResults().initResult().initError(), code, ptr(message));
    return kj::READY_NOW;
  };
  if (ctx_.shuttingDown()) return refuse(rpc::ErrorCode::SHUTTING_DOWN, "the server is shutting down");
  if (!isValidName(name)) {
    return refuse(rpc::ErrorCode::INVALID_ARGUMENT,
                  "guest name must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'");
  }
  if (elf.size() > ctx_.options.max_upload_bytes) {
    return refuse(rpc::ErrorCode::TOO_LARGE, "guest ELF is " + std::to_string(elf.size()) +
                                                 " bytes; this server accepts at most " +
                                                 std::to_string(ctx_.options.max_upload_bytes));
  }
  bool exists = tenant_.guests.count(name) != 0;
  if (tenant_.uploading.count(name) != 0) {
    return refuse(rpc::ErrorCode::INVALID_ARGUMENT, "an upload of guest '" + name + "' is already in progress");
  }
  if (exists && !params.getReplace()) {
    return refuse(rpc::ErrorCode::GUEST_EXISTS,
                  "guest '" + name + "' exists; upload with replace to overwrite it");
  }
  if (!exists && tenant_.guests.size() + tenant_.uploading.size() >= tenant_.config.quota.max_guests) {
    return refuse(rpc::ErrorCode::QUOTA_EXCEEDED,
                  "tenant may hold at most " + std::to_string(tenant_.config.quota.max_guests) + " guests");
  }

  tenant_.uploading.insert(name);
  ctx_.beginWork();
  std::vector<uint8_t> bytes(elf.begin(), elf.end());
  ServiceContext& ctx = ctx_;
  TenantState& tenant = tenant_;
  pool::PoolSettings settings = ctx_.settingsFor(tenant_, name);
  pool::TenantPool& tenant_pool = *tenant_.pool;
  auto work = [&ctx, &tenant, &tenant_pool, settings, name,
               bytes = std::move(bytes)]() -> std::shared_ptr<UploadOutcome> {
    auto out = std::make_shared<UploadOutcome>();
    out->size = bytes.size();
    // A Wasm module becomes a guest ELF here, and the ELF is what is stored,
    // so a restart does not translate it again (docs/wasm.md).
    auto image = wasm::guestImageFromUpload(bytes);
    if (!image) {
      out->error = image.takeError();
      return out;
    }
    auto snapshot = bootGuest(ctx.backend, *image, ctx.vm_config);
    if (!snapshot) {
      out->error = snapshot.takeError();
      return out;
    }
    out->sha256 = sha256Hex(*image);
    if (auto saved = ctx.store.save(tenant.config.name, name, *image); !saved) {
      out->error = saved.takeError();
      return out;
    }
    out->stored = true;
    // The answer waits for the warm VMs, so the first call is not a cold start.
    out->pool = std::make_shared<pool::GuestPool>(tenant_pool, name, std::move(snapshot.value()), settings);
    out->pool->prewarmNow();
    return out;
  };
  // The install step runs even if the client disconnects meanwhile: the
  // file is on disk, so the registry must agree with it.
  auto installed =
      tenant_.boot_gate.enter()
          .then([&ctx, work = std::move(work)]() mutable {
            return runBlocking<std::shared_ptr<UploadOutcome>>(ctx.mailbox, ctx.blocking, std::move(work));
          })
          .then([&ctx, &tenant, name](std::shared_ptr<UploadOutcome> out) {
            tenant.boot_gate.leave();
            tenant.uploading.erase(name);
            ctx.endWork();
            if (out->stored) {
              ctx.install(tenant, name, out->pool, out->sha256, out->size);
              spdlog::info("event=upload tenant={} guest={} bytes={} sha256={} exports={}",
                           tenant.config.name, name, out->size, out->sha256,
                           out->pool->snapshot().exports().size());
              const uint32_t warm = out->pool->stats().warm, min_warm = out->pool->settings().min_warm;
              if (warm < min_warm) {
                spdlog::warn("event=upload_short_of_min_warm tenant={} guest={} warm={} min_warm={} reason=\"the "
                             "tenant's VM quota ({} VMs) is in use by its other guests; calls take their idle "
                             "VMs\"",
                             tenant.config.name, name, warm, min_warm, tenant.config.quota.max_vms);
              }
            } else {
              spdlog::warn("event=upload_refused tenant={} guest={} error=\"{}\"", tenant.config.name,
                           name, text::escapeUntrusted(out->error->describe()));
            }
            return out;
          })
          .fork();
  ctx_.background.add(installed.addBranch().ignoreResult());
  return installed.addBranch().then([this, context, name](std::shared_ptr<UploadOutcome> out) mutable {
    auto result = context.getResults().initResult();
    if (out->stored) {
      auto it = tenant_.guests.find(name);
      if (it != tenant_.guests.end()) {
        fillGuestInfo(name, it->second, result.initGuest());
        return;
      }
      setError(result.initError(), rpc::ErrorCode::UNKNOWN_GUEST,
               ptr("guest '" + name + "' was removed while its upload finished"));
      return;
    }
    if (out->error->kind == vm::ErrorKind::kInternal) {
      setError(result.initError(), rpc::ErrorCode::INTERNAL,
               "could not store the guest; the server's log has the details");
    } else {
      // Validation and boot errors describe the ELF, not the host.
      setError(result.initError(), rpc::ErrorCode::INVALID_GUEST, ptr(out->error->message));
    }
  });
}

kj::Promise<void> TenantImpl::remove(RemoveContext context) {
  std::string name = str(context.getParams().getName());
  auto it = tenant_.guests.find(name);
  if (it == tenant_.guests.end()) {
    setNoSuchGuest(context.getResults().initError(), name);
    return kj::READY_NOW;
  }
  if (tenant_.uploading.count(name) != 0) {
    setError(context.getResults().initError(), rpc::ErrorCode::INVALID_ARGUMENT,
             ptr("an upload of guest '" + name + "' is in progress"));
    return kj::READY_NOW;
  }
  tenant_.pool->removeGuest(it->second.pool);
  tenant_.guests.erase(it);
  ctx_.beginWork();
  ServiceContext& ctx = ctx_;
  std::string tenant_name = tenantName();
  return writeStore(ctx_, [&ctx, tenant_name, name] { return ctx.store.remove(tenant_name, name); })
      .then([&ctx, context, tenant_name, name](std::optional<vm::Error> error) mutable {
        ctx.endWork();
        if (error) {
          spdlog::error("event=remove_failed tenant={} guest={} error=\"{}\"", tenant_name, name,
                        text::escapeUntrusted(error->describe()));
          setError(context.getResults().initError(), rpc::ErrorCode::INTERNAL,
                   "could not delete the stored guest; the server's log has the details");
          return;
        }
        spdlog::info("event=remove tenant={} guest={}", tenant_name, name);
      });
}

kj::Promise<void> TenantImpl::call(CallContext context) {
  std::string guest = str(context.getParams().getGuest());
  return runCall(ctx_, tenant_, kj::mv(context), guest);
}

kj::Promise<void> TenantImpl::stats(StatsContext context) {
  auto out = context.getResults().initStats();
  pool::TenantCounters counters = tenant_.pool->counters();
  out.setQueued(counters.queued);
  out.setRunning(counters.running);
  out.setOverloaded(counters.overloaded);
  auto list = out.initGuests(static_cast<unsigned>(tenant_.guests.size()));
  unsigned i = 0;
  for (const auto& [name, entry] : tenant_.guests) {
    pool::GuestStats s = entry.pool->stats();
    auto g = list[i++];
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
    auto h = g.initLatency();
    const auto& bounds = pool::LatencyHistogram::kBoundsUs;
    auto b = h.initBoundsUs(static_cast<unsigned>(bounds.size() - 1));
    for (size_t k = 0; k + 1 < bounds.size(); ++k) b.set(static_cast<unsigned>(k), bounds[k]);
    auto c = h.initCounts(static_cast<unsigned>(s.latency.counts.size()));
    for (size_t k = 0; k < s.latency.counts.size(); ++k) c.set(static_cast<unsigned>(k), s.latency.counts[k]);
    h.setP50Us(s.latency.quantileUs(0.5));
    h.setP99Us(s.latency.quantileUs(0.99));
  }
  return kj::READY_NOW;
}

kj::Promise<void> TenantImpl::configure(ConfigureContext context) {
  auto params = context.getParams();
  std::string name = str(params.getGuest());
  auto settings = params.getSettings();
  auto result = context.getResults().initResult();
  auto it = tenant_.guests.find(name);
  if (it == tenant_.guests.end()) {
    setNoSuchGuest(result.initError(), name);
    return kj::READY_NOW;
  }
  uint32_t min_warm = settings.getMinWarm(), max_vms = settings.getMaxVms();
  if (max_vms == 0 || min_warm > max_vms) {
    setError(result.initError(), rpc::ErrorCode::INVALID_ARGUMENT,
             ptr("need 1 <= maxVms and minWarm <= maxVms, got minWarm " + std::to_string(min_warm) +
                 ", maxVms " + std::to_string(max_vms)));
    return kj::READY_NOW;
  }
  if (max_vms > tenant_.config.quota.max_vms) {
    setError(result.initError(), rpc::ErrorCode::QUOTA_EXCEEDED,
             ptr("maxVms " + std::to_string(max_vms) + " exceeds the tenant's quota of " +
                 std::to_string(tenant_.config.quota.max_vms) + " VMs"));
    return kj::READY_NOW;
  }
  pool::PoolSettings chosen{min_warm, max_vms};
  it->second.pool->setSettings(chosen);
  // The answer waits for the settings to be on disk, so a restart keeps
  // them; the pool uses them already.
  ctx_.beginWork();
  ServiceContext& ctx = ctx_;
  std::string tenant_name = tenantName();
  return writeStore(ctx_,
                    [&ctx, tenant_name, name, chosen] { return ctx.store.saveSettings(tenant_name, name, chosen); })
      .then([&ctx, context, tenant_name, name, chosen](std::optional<vm::Error> error) mutable {
        ctx.endWork();
        auto result = context.getResults().initResult();
        if (error) {
          spdlog::error("event=configure_failed tenant={} guest={} error=\"{}\"", tenant_name, name,
                        text::escapeUntrusted(error->describe()));
          setError(result.initError(), rpc::ErrorCode::INTERNAL,
                   "could not store the settings; the server's log has the details");
          return;
        }
        spdlog::info("event=configure tenant={} guest={} min_warm={} max_vms={}", tenant_name, name,
                     chosen.min_warm, chosen.max_vms);
        auto out = result.initSettings();
        out.setMinWarm(chosen.min_warm);
        out.setMaxVms(chosen.max_vms);
      });
}

}  // namespace

kj::Own<rpc::Tenant::Server> makeTenantService(ServiceContext& ctx, TenantState& tenant) {
  return kj::heap<TenantImpl>(ctx, tenant);
}

}  // namespace sandpool::server
