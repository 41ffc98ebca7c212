// The RPC surface: the bootstrap `Sandpool` capability and the per-tenant
// `Tenant` capabilities it hands out at login. These classes only decode,
// check, hand work to the pools or the blocking pool, and encode results;
// nothing slow runs on the KJ thread.
//
// Threads: everything here runs on the KJ thread, except
// RpcCallTask::callHostFunction() (a worker) and complete() (any thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/thread_pool.hpp>
#include <kj/async.h>

#include "rpc-schema/sandpool.capnp.h"
#include "server/guest_store.h"
#include "server/kj_mailbox.h"
#include "server/options.h"
#include "server/tenant_state.h"
#include "vm/backend.h"
#include "vm/config.h"
#include "vm/snapshot.h"

namespace sandpool::server {

// Validates and boots a guest ELF: what an upload and a reload both do.
// Any thread.
vm::Expected<std::shared_ptr<const vm::Snapshot>> bootGuest(vm::Backend& backend,
                                                            std::span<const uint8_t> elf,
                                                            const vm::VmConfig& config);

// State shared by every capability of one server.
class ServiceContext : private kj::TaskSet::ErrorHandler {
 public:
  ServiceContext(const ServerOptions& options, vm::VmConfig vm_config, vm::Backend& backend,
                 GuestStore& store, KjMailbox& mailbox, boost::asio::thread_pool& blocking,
                 std::vector<std::unique_ptr<TenantState>>& tenants);

  const ServerOptions& options;
  const vm::VmConfig vm_config;
  vm::Backend& backend;
  GuestStore& store;
  KjMailbox& mailbox;
  boost::asio::thread_pool& blocking;
  std::vector<std::unique_ptr<TenantState>>& tenants;
  // Work that must finish even if the client that started it goes away.
  kj::TaskSet background;

  // Installs a booted guest in its tenant, replacing (retiring) an older one.
  GuestEntry& install(TenantState& tenant, const std::string& name,
                      std::shared_ptr<const vm::Snapshot> snapshot, std::string sha256,
                      uint64_t size);

  // In-flight RPC work, so that shutdown can wait for it.
  void beginWork();
  void endWork();
  uint64_t inFlight() const { return in_flight_; }
  // Resolves at the next beginWork() or endWork(): the serving loop's cue to
  // start or stop busy-polling for replies.
  kj::Promise<void> nextActivity();
  // Refuses new work from now on; the promise resolves when nothing is in flight.
  kj::Promise<void> shutdown();
  bool shuttingDown() const { return shutting_down_; }

 private:
  void taskFailed(kj::Exception&& exception) override;

  uint64_t in_flight_ = 0;
  bool shutting_down_ = false;
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> idle_fulfiller_;
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> activity_fulfiller_;
  void signalActivity();
};

// The bootstrap capability; one per connection so the log can name the peer.
class SandpoolImpl final : public rpc::Sandpool::Server {
 public:
  SandpoolImpl(ServiceContext& context, std::string peer);

 protected:
  kj::Promise<void> ping(PingContext context) override;
  kj::Promise<void> version(VersionContext context) override;
  kj::Promise<void> login(LoginContext context) override;

 private:
  ServiceContext& ctx_;
  std::string peer_;
};

}  // namespace sandpool::server
