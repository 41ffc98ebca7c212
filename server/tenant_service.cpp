#include "server/tenant_service.h"

#include <span>
#include <string>
#include <utility>

#include <kj/debug.h>

#include "server/rpc_codec.h"

namespace sandpool::server {

namespace {

// A call of `guest`'s function, for Tenant.call and Guest.call alike: both
// contexts' params carry function, args, hostFunctions and timeoutMs, and
// both results a `result :CallResult`. The call's deadline is set here, once,
// at receipt.
template <typename Context>
kj::Promise<void> runCall(TenantRegistry& registry, HostCallForwarder& host_calls,
                          TenantState& tenant, Context context, const std::string& guest_name) {
  const pool::Clock::time_point received = pool::Clock::now();
  // A caller that cancels the call, or whose connection goes away, drops
  // its promise; the registry then drops the call if it has not run.
  context.allowCancellation();
  auto params = context.getParams();
  auto guest = registry.guest(tenant, guest_name);
  if (!guest.ok()) {
    ++tenant.metrics.calls_to_no_guest[outcomeSlot(guest.failure().code)];
    toRpc(guest.failure(), context.getResults().initResult().initError().initError());
    return kj::READY_NOW;
  }
  GuestCall call{.received = received,
                 .deadline = registry.callDeadline(received, params.getTimeoutMs())};
  call.request.function = str(params.getFunction());
  auto args = params.getArgs();
  call.request.args.reserve(args.size());
  for (auto arg : args) call.request.args.push_back(fromRpc(arg));
  if (params.hasHostFunctions())
    call.host_functions = host_calls.forwardTo(params.getHostFunctions(), call.deadline);
  return registry.call(tenant, *guest.value(), std::move(call))
      .then([context](FinishedCall&& finished) mutable {
        toRpc(finished, context.getResults(replySize(finished.outcome)).initResult());
      });
}

// Every method of a revoked capability fails with a DISCONNECTED exception,
// the way a capability behind a revoked membrane does; the client logs in
// again with the current token.
void requireLive(const TenantState& tenant, uint64_t generation) {
  if (tenant.generation != generation) {
    kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED,
                                         "this capability was revoked: the tenant's token was "
                                         "rotated or the tenant removed; log in again"));
  }
}

// One guest of one tenant, by name (see Guest in the schema).
class GuestImpl final : public rpc::Guest::Server {
 public:
  GuestImpl(TenantRegistry& registry, HostCallForwarder& host_calls, TenantState& tenant,
            std::string name)
      : registry_(registry),
        host_calls_(host_calls),
        tenant_(tenant),
        name_(std::move(name)),
        generation_(tenant.generation) {}

  DispatchCallResult dispatchCall(
      uint64_t interface_id, uint16_t method_id,
      capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    requireLive(tenant_, generation_);
    return rpc::Guest::Server::dispatchCall(interface_id, method_id, context);
  }

 protected:
  kj::Promise<void> call(CallContext context) override {
    return runCall(registry_, host_calls_, tenant_, kj::mv(context), name_);
  }

  kj::Promise<void> info(InfoContext context) override {
    auto result = context.getResults().initResult();
    auto guest = registry_.guest(tenant_, name_);
    if (guest.ok()) {
      toRpc(name_, *guest.value(), result.initInfo());
    } else {
      toRpc(guest.failure(), result.initError());
    }
    return kj::READY_NOW;
  }

 private:
  TenantRegistry& registry_;
  HostCallForwarder& host_calls_;
  TenantState& tenant_;
  const std::string name_;
  const uint64_t generation_;
};

class TenantImpl final : public rpc::Tenant::Server {
 public:
  TenantImpl(TenantRegistry& registry, HostCallForwarder& host_calls, TenantState& tenant)
      : registry_(registry),
        host_calls_(host_calls),
        tenant_(tenant),
        generation_(tenant.generation) {}

  DispatchCallResult dispatchCall(
      uint64_t interface_id, uint16_t method_id,
      capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    requireLive(tenant_, generation_);
    return rpc::Tenant::Server::dispatchCall(interface_id, method_id, context);
  }

 protected:
  kj::Promise<void> info(InfoContext context) override {
    auto results = context.getResults();
    results.setName(ptr(tenant_.config.name));
    toRpc(tenant_.config.quota, results.initQuota());
    return kj::READY_NOW;
  }

  kj::Promise<void> upload(UploadContext context) override {
    const pool::Clock::time_point received = pool::Clock::now();
    auto params = context.getParams();
    std::string name = str(params.getName());
    auto elf = params.getElf();
    return registry_
        .upload(tenant_, name, std::span<const uint8_t>(elf.begin(), elf.size()),
                params.getReplace(), fromRpc(params.getVmSettings()))
        .then([&metrics = tenant_.metrics, context, name,
               received](OrFailure<GuestEntry> answer) mutable {
          ++metrics.uploads[answer.ok() ? kOutcomeOk : outcomeSlot(answer.failure().code)];
          metrics.upload_duration.add(pool::Clock::now() - received);
          auto result = context.getResults().initResult();
          if (answer.ok()) {
            toRpc(name, answer.value(), result.initGuest());
          } else {
            toRpc(answer.failure(), result.initError());
          }
        });
  }

  kj::Promise<void> list(ListContext context) override {
    const auto& guests = registry_.list(tenant_);
    auto out = context.getResults().initGuests(static_cast<unsigned>(guests.size()));
    unsigned i = 0;
    for (const auto& [name, guest] : guests) toRpc(name, guest, out[i++]);
    return kj::READY_NOW;
  }

  kj::Promise<void> remove(RemoveContext context) override {
    return registry_.remove(tenant_, str(context.getParams().getName()))
        .then([context](std::optional<Failure> failure) mutable {
          if (failure) toRpc(*failure, context.getResults().initError());
        });
  }

  kj::Promise<void> call(CallContext context) override {
    std::string guest = str(context.getParams().getGuest());
    return runCall(registry_, host_calls_, tenant_, kj::mv(context), guest);
  }

  kj::Promise<void> stats(StatsContext context) override {
    RpcStatsWriter writer(context.getResults().initStats());
    registry_.visitStats(tenant_, writer);
    return kj::READY_NOW;
  }

  kj::Promise<void> configure(ConfigureContext context) override {
    auto params = context.getParams();
    std::optional<pool::PoolSettings> settings;
    if (params.hasSettings()) {
      settings =
          pool::PoolSettings{params.getSettings().getMinWarm(), params.getSettings().getMaxVms()};
    }
    return registry_
        .configure(tenant_, str(params.getGuest()), settings, fromRpc(params.getVmSettings()))
        .then([context](OrFailure<GuestEntry> answer) mutable {
          auto result = context.getResults().initResult();
          if (answer.ok()) {
            toRpc(answer.value().pool->settings(), result.initSettings());
            toRpc(answer.value().pool->snapshot().config(), result.initVmSettings());
          } else {
            toRpc(answer.failure(), result.initError());
          }
        });
  }

  kj::Promise<void> guest(GuestContext context) override {
    std::string name = str(context.getParams().getName());
    auto result = context.getResults().initResult();
    auto guest = registry_.guest(tenant_, name);
    if (!guest.ok()) {
      toRpc(guest.failure(), result.initError());
      return kj::READY_NOW;
    }
    result.setGuest(kj::heap<GuestImpl>(registry_, host_calls_, tenant_, std::move(name)));
    return kj::READY_NOW;
  }

 private:
  TenantRegistry& registry_;
  HostCallForwarder& host_calls_;
  TenantState& tenant_;
  const uint64_t generation_;
};

}  // namespace

kj::Own<rpc::Tenant::Server> makeTenantService(TenantRegistry& registry,
                                               HostCallForwarder& host_calls, TenantState& tenant) {
  return kj::heap<TenantImpl>(registry, host_calls, tenant);
}

}  // namespace sandpool::server
