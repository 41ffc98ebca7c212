// The server's view of one tenant: its configuration, its pool and its
// guests by name.
//
// Threads: `guests` and `uploading` belong to the KJ thread (uploads and
// removals arrive as RPC calls and finish there); the pool is shared with
// the workers and the tenant's strand through its own lock-free interface.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>

#include <kj/async.h>

#include "pool/guest_pool.h"
#include "pool/tenant_pool.h"
#include "server/call_metrics.h"
#include "server/tenants_file.h"
#include "server/vm_settings.h"

namespace sandpool::server {

struct GuestEntry {
  std::shared_ptr<pool::GuestPool> pool;
  std::string sha256;
  uint64_t size = 0;
  // The VM settings its tenant chose (0: the server's default); the VMs run
  // with pool->snapshot().config().
  VmSettings chosen_vm;
  // Shared with the guest's calls in flight, and with the entry of a
  // version that replaces this one.
  std::shared_ptr<GuestMetrics> metrics = std::make_shared<GuestMetrics>();
};

// One tenant's uploads boot their guests one at a time, in the order they
// arrived: a tenant whose guests' initialisation spins until the boot timeout
// then holds one thread of the blocking pool, never all of them, and another
// tenant's upload boots beside it (docs/server.md, "Fair share").
// Thread: the KJ thread.
class BootGate {
 public:
  // Resolves when this upload may boot; it must call leave() once it has.
  kj::Promise<void> enter() {
    if (!busy_) {
      busy_ = true;
      return kj::READY_NOW;
    }
    auto turn = kj::newPromiseAndFulfiller<void>();
    waiting_.push_back(kj::mv(turn.fulfiller));
    return kj::mv(turn.promise);
  }
  // Hands the turn to the oldest upload still waiting (one whose client
  // went away no longer is).
  void leave() {
    while (!waiting_.empty()) {
      kj::Own<kj::PromiseFulfiller<void>> next = kj::mv(waiting_.front());
      waiting_.pop_front();
      if (next->isWaiting()) {
        next->fulfill();
        return;
      }
    }
    busy_ = false;
  }

 private:
  bool busy_ = false;
  std::deque<kj::Own<kj::PromiseFulfiller<void>>> waiting_;
};

struct TenantState {
  TenantConfig config;
  std::unique_ptr<pool::TenantPool> pool;
  std::map<std::string, GuestEntry> guests;
  std::set<std::string> uploading;  // names with an upload in progress
  BootGate boot_gate;
  // Capabilities handed out carry the generation they were issued under;
  // bumping it (token rotated, tenant removed) revokes them all at once.
  uint64_t generation = 0;
  bool enabled = true;  // false once the tenant left the tenants file
  TenantMetrics metrics;
};

}  // namespace sandpool::server
