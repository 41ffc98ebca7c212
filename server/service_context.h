// State shared by every capability of one server: the options, the
// backend, the store, the mailbox back to the KJ thread, the tenants, and
// the count of RPC work in flight that shutdown waits for.
//
// Thread: the KJ thread, except bootGuest() (any thread).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <boost/asio/thread_pool.hpp>
#include <kj/async.h>

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

class ServiceContext : private kj::TaskSet::ErrorHandler {
 public:
  // Makes the pool of a tenant that appears in the tenants file.
  using PoolFactory = std::function<std::unique_ptr<pool::TenantPool>(const TenantConfig&)>;

  ServiceContext(const ServerOptions& options, vm::VmConfig vm_config, vm::Backend& backend,
                 GuestStore& store, KjMailbox& mailbox, boost::asio::thread_pool& blocking,
                 std::vector<std::unique_ptr<TenantState>>& tenants, PoolFactory make_pool);

  const ServerOptions& options;
  const vm::VmConfig vm_config;
  vm::Backend& backend;
  GuestStore& store;
  KjMailbox& mailbox;
  boost::asio::thread_pool& blocking;
  std::vector<std::unique_ptr<TenantState>>& tenants;
  // Work that must finish even if the client that started it goes away.
  kj::TaskSet background;

  // Boots and installs every guest stored for `tenant` (start-up, or a
  // tenant added by a reload). Blocks while the guests boot.
  void loadStoredGuests(TenantState& tenant);

  // Applies a re-read tenants file (SIGHUP): a changed token revokes every
  // capability issued under the old one; a tenant gone from the file is
  // disabled and its capabilities revoked (its stored guests stay on disk);
  // new tenants are added. Quota changes need a restart (logged).
  void applyTenants(std::vector<TenantConfig> configs);

  // The pool settings a new version of guest `name` starts with: the old
  // version's if there is one, else those stored with configure(), else the
  // flags' defaults; always within the quota.
  pool::PoolSettings settingsFor(const TenantState& tenant, const std::string& name) const;
  // Installs a guest's (prewarmed) pool in its tenant, replacing (retiring)
  // an older version.
  GuestEntry& install(TenantState& tenant, const std::string& name, std::shared_ptr<pool::GuestPool> guest,
                      std::string sha256, uint64_t size);

  // In-flight RPC work, so that shutdown can wait for it.
  void beginWork();
  void endWork();
  uint64_t inFlight() const { return in_flight_; }
  // How many times work began or ended since start: a turn of the serving
  // loop that moved it did something useful.
  uint64_t activityCount() const { return activity_count_; }
  // Resolves at the next beginWork() or endWork(): the serving loop's cue to
  // start or stop busy-polling for replies.
  kj::Promise<void> nextActivity();
  // Refuses new work from now on; the promise resolves when nothing is in flight.
  kj::Promise<void> shutdown();
  bool shuttingDown() const { return shutting_down_; }

 private:
  void taskFailed(kj::Exception&& exception) override;
  void signalActivity();

  PoolFactory make_pool_;
  uint64_t in_flight_ = 0;
  uint64_t activity_count_ = 0;
  bool shutting_down_ = false;
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> idle_fulfiller_;
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> activity_fulfiller_;
};

}  // namespace sandpool::server
