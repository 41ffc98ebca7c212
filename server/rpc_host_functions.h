// The host functions of one call, forwarded to the capability its client
// lent for it (Tenant.call's hostFunctions): the worker running the guest
// posts each host call to the KJ thread and blocks until the reply or the
// call's deadline; the KJ thread sends it to the client and stays free
// meanwhile.
//
// Threads: callHostFunction() on the worker running the call; everything
// else on the KJ thread. The object lives as long as its call's task
// (TenantRegistry::call), so every host call it posted is delivered before
// it goes.
#pragma once

#include <memory>
#include <span>
#include <string_view>

#include <kj/async.h>

#include "pool/call_task.h"
#include "rpc-schema/sandpool.capnp.h"
#include "server/kj_mailbox.h"
#include "vm/host_functions.h"

namespace sandpool::server {

struct HostCallState;

class RpcHostFunctions final : public vm::HostFunctions {
 public:
  // `background` holds the forwarded calls; `deadline` is the call's.
  RpcHostFunctions(KjMailbox& mailbox, kj::TaskSet& background, rpc::HostFunctions::Client client,
                   pool::Clock::time_point deadline)
      : mailbox_(mailbox), background_(background), client_(kj::mv(client)), deadline_(deadline) {}
  ~RpcHostFunctions() noexcept override {}

  // Worker: forwards the host call to the KJ thread and waits for the reply
  // or the call's deadline, whichever comes first.
  vm::Expected<vm::Value> callHostFunction(std::string_view name,
                                           std::span<const vm::Value> args) override;

  // KJ thread: sends a forwarded host call to the client.
  void startHostCall(std::shared_ptr<HostCallState> state);

 private:
  KjMailbox& mailbox_;
  kj::TaskSet& background_;
  rpc::HostFunctions::Client client_;  // KJ thread only
  const pool::Clock::time_point deadline_;
};

// Makes RpcHostFunctions for the calls whose clients lend host functions.
// Thread: the KJ thread.
class HostCallForwarder {
 public:
  HostCallForwarder(KjMailbox& mailbox, kj::TaskSet& background)
      : mailbox_(mailbox), background_(background) {}

  std::unique_ptr<vm::HostFunctions> forwardTo(rpc::HostFunctions::Client client,
                                               pool::Clock::time_point deadline) {
    return std::make_unique<RpcHostFunctions>(mailbox_, background_, kj::mv(client), deadline);
  }

 private:
  KjMailbox& mailbox_;
  kj::TaskSet& background_;
};

}  // namespace sandpool::server
