// The application layer between the RPC edge and the pools: the tenants,
// their guests, and what a tenant may do with them (upload, remove,
// configure, call, list, stats), in plain C++ types. The Cap'n Proto
// capabilities (tenant_service.cpp) decode a request, call one operation
// here and encode its answer (rpc_codec.h); no capnp type reaches this
// layer. What each operation logs is decided here too.
//
// Thread: every member runs on the KJ thread. Slow steps (booting an
// upload, file writes) run on the blocking pool and come back through the
// mailbox as promises; calls run on the workers and complete through the
// mailbox. The tenants' pools are shared with the workers and the tenants'
// strands through their own lock-free interfaces.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <boost/asio/thread_pool.hpp>
#include <kj/async.h>

#include "pool/call_task.h"
#include "pool/guest_pool.h"
#include "pool/tenant_pool.h"
#include "server/failure_code.h"
#include "server/guest_store.h"
#include "server/in_flight_work.h"
#include "server/kj_mailbox.h"
#include "server/options.h"
#include "server/tenant_state.h"
#include "vm/backend.h"
#include "vm/config.h"
#include "vm/guest_image.h"
#include "vm/host_functions.h"
#include "wasm/translation_cache.h"
#include "wasm/translator_service.h"

namespace sandpool::server {

// What the client is told. The message never carries host details (paths,
// system errors): those are logged, and an internal failure says so.
struct Failure {
  FailureCode code;
  std::string message;
};

template <typename T>
class [[nodiscard]] OrFailure {
 public:
  OrFailure(T value) : state_(std::move(value)) {}
  OrFailure(Failure failure) : state_(std::move(failure)) {}

  bool ok() const { return state_.index() == 0; }
  T& value() { return std::get<0>(state_); }
  const Failure& failure() const { return std::get<1>(state_); }

 private:
  std::variant<T, Failure> state_;
};

// The guest ELF that boots, parsed and validated: for an upload (after a
// Wasm module was translated to its ELF, TenantRegistry::imageFromUpload)
// and for a stored guest reloaded at start-up alike (what is stored is
// always the ELF, so a restart translates nothing).
vm::Expected<vm::GuestImage> guestImageFromUpload(std::span<const uint8_t> uploaded,
                                                  const vm::VmConfig& config);

// The translation cache's bound: the total size of the guest ELFs it keeps
// (docs/wasm.md).
inline constexpr uint64_t kTranslationCacheBytes = 64ull << 20;

// One call as the client asked for it.
struct GuestCall {
  vm::CallRequest request;                            // function and arguments
  std::unique_ptr<vm::HostFunctions> host_functions;  // those the client lent, if any
  pool::Clock::time_point received;
  pool::Clock::time_point deadline;  // TenantRegistry::callDeadline()
};

struct FinishedCall {
  pool::CallOutcome outcome;
  std::chrono::nanoseconds total;  // from receipt to the outcome's delivery
};

// Reads a tenant's statistics: tenant() once, then guest() per guest.
class StatsVisitor {
 public:
  virtual ~StatsVisitor() = default;
  virtual void tenant(const TenantConfig& config, const pool::TenantCounters& counters,
                      size_t guests) = 0;
  virtual void guest(const std::string& name, const pool::GuestStats& stats) = 0;
};

class TenantRegistry : private kj::TaskSet::ErrorHandler {
 public:
  // Makes the pool of a tenant that appears in the tenants file.
  using PoolFactory = std::function<std::unique_ptr<pool::TenantPool>(const TenantConfig&)>;

  // `translator` turns uploaded Wasm modules into guest ELFs; without one
  // they are refused.
  TenantRegistry(const ServerOptions& options, vm::Backend& backend, GuestStore& store,
                 KjMailbox& mailbox, boost::asio::thread_pool& blocking, InFlightWork& in_flight,
                 PoolFactory make_pool, std::vector<TenantConfig> tenants,
                 wasm::TranslatorService* translator);
  TenantRegistry(const TenantRegistry&) = delete;
  TenantRegistry& operator=(const TenantRegistry&) = delete;

  size_t tenantCount() const { return tenants_.size(); }

  // Boots and installs every stored guest of every tenant (start-up).
  // Blocks while the guests boot.
  void loadStoredGuests();
  // Applies a re-read tenants file (SIGHUP): a changed token revokes every
  // capability issued under the old one; a tenant gone from the file is
  // disabled and its capabilities revoked (its stored guests stay on disk);
  // new tenants are added with their stored guests. Quota changes need a
  // restart (logged).
  void applyTenants(std::vector<TenantConfig> configs);

  // The enabled tenant whose token this is; every token is compared in
  // constant time. Null (and logged) if none.
  TenantState* login(std::string_view token, const std::string& peer);

  // Validates, boots and stores an upload and installs it once its min_warm
  // VMs are up; the answer is the installed guest. `requested_vm` (0 fields: the
  // replaced version's, else the defaults) must be within the flags' limits
  // and one VM of it within the tenant's memory quota.
  kj::Promise<OrFailure<GuestEntry>> upload(TenantState& tenant, const std::string& name,
                                            std::span<const uint8_t> uploaded, bool replace,
                                            VmSettings requested_vm);
  // Retires the guest at once and deletes its files; the answer waits for
  // the deletion.
  kj::Promise<std::optional<Failure>> remove(TenantState& tenant, const std::string& name);
  // Applies pool settings (none: unchanged) at once and stores them; the
  // answer waits for the file. VM settings (0 fields: unchanged) that
  // differ from the VMs' boot the stored guest again into a new version,
  // installed like a replacing upload; the answer waits for its warm VMs.
  // The guest's memory times its maxVms must fit the tenant's memory quota.
  kj::Promise<OrFailure<GuestEntry>> configure(TenantState& tenant, const std::string& name,
                                               std::optional<pool::PoolSettings> settings,
                                               VmSettings requested_vm);

  // The absolute deadline of a call received at `received`: the server's
  // call timeout, or the client's `timeout_ms` if shorter (0: none given).
  pool::Clock::time_point callDeadline(pool::Clock::time_point received, uint32_t timeout_ms) const;
  // Runs `call` on `guest` (from guest()); the outcome, logged, resolves on
  // the KJ thread. Counts as work in flight until then.
  kj::Promise<FinishedCall> call(TenantState& tenant, const GuestEntry& guest, GuestCall call);

  OrFailure<const GuestEntry*> guest(const TenantState& tenant, const std::string& name) const;
  const std::map<std::string, GuestEntry>& list(const TenantState& tenant) const {
    return tenant.guests;
  }
  void visitStats(const TenantState& tenant, StatsVisitor& visitor) const;
  // Every tenant, those that left the tenants file included (the metrics
  // page).
  const std::vector<std::unique_ptr<TenantState>>& tenants() const { return tenants_; }
  // Logins with a token no enabled tenant holds, since start.
  uint64_t loginsRefused() const { return logins_refused_; }

  // Shutdown: pools refuse queued and new calls (with in_flight's
  // shutdown(), which refuses uploads and calls here) ...
  void beginShutdown();
  // ... and, once the workers are joined, stop their strand work.
  void stopPools();

 private:
  std::optional<Failure> checkUpload(const TenantState& tenant, const std::string& name,
                                     size_t bytes, bool replace) const;
  // The pool settings a new version of guest `name` starts with: the old
  // version's if there is one, else those stored with configure(), else the
  // flags' defaults; always within the quota, its VMs of `memory_bytes`
  // each within the memory quota.
  pool::PoolSettings settingsFor(const TenantState& tenant, const std::string& name,
                                 uint64_t memory_bytes) const;
  // The VM settings `chosen` (0 fields: the flags' defaults), checked
  // against the flags' limits and, one VM or `max_vms` of them, against the
  // tenant's memory quota.
  OrFailure<VmSettings> resolveVm(const TenantState& tenant, const VmSettings& chosen,
                                  uint32_t max_vms) const;
  // A new version of a guest to boot: an upload, or the stored guest with
  // new VM settings.
  struct NewVersion {
    // The guest ELF to boot. Blocking pool.
    std::function<vm::Expected<std::vector<uint8_t>>()> image;
    bool store_image = false;                      // the ELF is new: store it
    std::optional<pool::PoolSettings> store_pool;  // pool settings to store
    VmSettings chosen_vm;                          // stored with the guest
    VmSettings vm;                                 // what its VMs run with
    pool::PoolSettings pool;
    const char* event;         // for the log: "upload" or "configure"
    FailureCode boot_refused;  // what an ELF that does not boot is
  };
  // Boots, stores and installs `version` of guest `name`, which the caller
  // has checked and marked as uploading; the answer is the installed guest.
  kj::Promise<OrFailure<GuestEntry>> installNewVersion(TenantState& tenant, const std::string& name,
                                                       NewVersion version);
  // Uploaded bytes as the guest ELF to boot and store: a Wasm module (by its
  // magic) translated in the translator process, or taken from the
  // translation cache, anything else as it is. Logs each translation with
  // the tenant and guest it is for. Blocking pool.
  vm::Expected<std::vector<uint8_t>> imageFromUpload(const std::string& tenant,
                                                     const std::string& guest,
                                                     std::vector<uint8_t> bytes);
  // Installs a guest's (prewarmed) pool in its tenant, replacing (retiring)
  // an older version.
  void install(TenantState& tenant, const std::string& name, GuestEntry entry);
  void loadStoredGuests(TenantState& tenant);
  std::unique_ptr<TenantState> makeTenant(TenantConfig config);
  // Runs a write to the guest store on the blocking pool; the promise holds
  // its error, if any, on the KJ thread.
  kj::Promise<std::optional<vm::Error>> writeStore(std::function<vm::Expected<void>()> write);
  void taskFailed(kj::Exception&& exception) override;

  const ServerOptions& options_;
  vm::Backend& backend_;
  wasm::TranslatorService* const translator_;
  // Shared by all tenants (docs/security.md, "Wasm guests").
  wasm::TranslationCache translations_{kTranslationCacheBytes};
  GuestStore& store_;
  KjMailbox& mailbox_;
  boost::asio::thread_pool& blocking_;
  InFlightWork& in_flight_;
  PoolFactory make_pool_;
  // Never shrinks: a tenant that left the file is disabled, so capabilities
  // and calls may keep their reference.
  std::vector<std::unique_ptr<TenantState>> tenants_;
  uint64_t logins_refused_ = 0;
  // Installs of uploads whose file is written: they finish even if the
  // client that uploaded went away. Declared after the tenants, so that
  // an install cut short by shutdown goes before the pools it holds.
  kj::TaskSet installs_;
};

}  // namespace sandpool::server
