// One RPC call on its way through the pools, and the forwarding of the
// guest's host calls to a capability the client lent for the call.
//
// Life of a call: created on the KJ thread by Tenant.call, submitted to the
// tenant's pool, completed on a worker (posted back to the KJ thread through
// the mailbox), delivered and deleted on the KJ thread.
//
// Host calls: the worker running the guest posts the request to the KJ
// thread and blocks until the reply or the call's deadline; the KJ thread
// sends it to the client and stays free meanwhile.
#pragma once

#include <span>
#include <string_view>

#include <kj/async.h>

#include "pool/call_task.h"
#include "rpc-schema/sandpool.capnp.h"
#include "server/kj_mailbox.h"
#include "vm/host_functions.h"

namespace sandpool::server {

class ServiceContext;
struct HostCallState;

class RpcCallTask final : public pool::CallTask, public KjMailbox::Message, public vm::HostFunctions {
 public:
  RpcCallTask(ServiceContext& ctx, kj::Own<kj::PromiseFulfiller<pool::CallOutcome>> fulfiller)
      : ctx_(ctx), fulfiller_(kj::mv(fulfiller)) {}
  ~RpcCallTask() noexcept override {}

  // KJ thread, before submitting: host calls the server does not provide go
  // to `client`.
  void setHostFunctions(rpc::HostFunctions::Client client) {
    host_functions_ = kj::mv(client);
    request.host_functions = this;
  }

  // Any thread: hands the task to the KJ thread.
  void complete() override;
  // KJ thread: fulfils the RPC call's promise with the outcome.
  void deliver() override { fulfiller_->fulfill(kj::mv(outcome)); }

  // Worker: forwards the host call to the KJ thread and waits for the reply
  // or the call's deadline, whichever comes first.
  vm::Expected<vm::Value> callHostFunction(std::string_view name,
                                           std::span<const vm::Value> args) override;

  // KJ thread: sends a forwarded host call to the client.
  void startHostCall(std::shared_ptr<HostCallState> state);

 private:
  ServiceContext& ctx_;
  kj::Own<kj::PromiseFulfiller<pool::CallOutcome>> fulfiller_;
  kj::Maybe<rpc::HostFunctions::Client> host_functions_;  // KJ thread only
};

}  // namespace sandpool::server
