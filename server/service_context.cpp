#include "server/service_context.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "common/untrusted_text.h"
#include "vm/guest_image.h"

namespace sandpool::server {

vm::Expected<std::shared_ptr<const vm::Snapshot>> bootGuest(vm::Backend& backend,
                                                            std::span<const uint8_t> elf,
                                                            const vm::VmConfig& config) {
  auto image = vm::GuestImage::parse(elf, config);
  if (!image) return image.takeError();
  return vm::Snapshot::boot(backend, image.value(), config);
}

ServiceContext::ServiceContext(const ServerOptions& options, vm::VmConfig vm_config,
                               vm::Backend& backend, GuestStore& store, KjMailbox& mailbox,
                               boost::asio::thread_pool& blocking,
                               std::vector<std::unique_ptr<TenantState>>& tenants, PoolFactory make_pool)
    : options(options),
      vm_config(vm_config),
      backend(backend),
      store(store),
      mailbox(mailbox),
      blocking(blocking),
      tenants(tenants),
      background(*this),
      make_pool_(std::move(make_pool)) {}

void ServiceContext::loadStoredGuests(TenantState& tenant) {
  std::vector<std::string> errors;
  auto stored = store.loadAll(tenant.config.name, errors);
  for (const std::string& e : errors) spdlog::error("event=reload_refused {}", text::escapeUntrusted(e));
  for (auto& g : stored) {
    auto snapshot = bootGuest(backend, g.elf, vm_config);
    if (!snapshot) {
      spdlog::error("event=reload_refused tenant={} guest={} error=\"{}\"", tenant.config.name, g.guest,
                    text::escapeUntrusted(snapshot.error().describe()));
      continue;
    }
    auto guest = std::make_shared<pool::GuestPool>(*tenant.pool, g.guest, std::move(snapshot.value()),
                                                   settingsFor(tenant, g.guest));
    guest->prewarmNow();
    install(tenant, g.guest, std::move(guest), g.sha256, g.elf.size());
    spdlog::info("event=reload tenant={} guest={} sha256={}", tenant.config.name, g.guest, g.sha256);
  }
}

void ServiceContext::applyTenants(std::vector<TenantConfig> configs) {
  for (auto& tenant : tenants) {
    auto it = std::find_if(configs.begin(), configs.end(),
                           [&](const TenantConfig& c) { return c.name == tenant->config.name; });
    if (it == configs.end()) {
      if (tenant->enabled) {
        tenant->enabled = false;
        ++tenant->generation;
        spdlog::warn("event=tenant_disabled tenant={} reason=\"not in the tenants file any more\"",
                     tenant->config.name);
      }
      continue;
    }
    if (!tenant->enabled || it->token != tenant->config.token) {
      ++tenant->generation;
      spdlog::info("event=token_rotated tenant={} capabilities_revoked=true", tenant->config.name);
    }
    tenant->enabled = true;
    tenant->config.token = it->token;
    if (!(it->quota == tenant->config.quota)) {
      spdlog::warn("event=quota_unchanged tenant={} reason=\"quota changes take effect at restart\"",
                   tenant->config.name);
    }
    configs.erase(it);
  }
  for (auto& config : configs) {
    auto t = std::make_unique<TenantState>();
    t->pool = make_pool_(config);
    t->config = std::move(config);
    spdlog::info("event=tenant_added tenant={}", t->config.name);
    loadStoredGuests(*t);
    tenants.push_back(std::move(t));
  }
}

pool::PoolSettings ServiceContext::settingsFor(const TenantState& tenant, const std::string& name) const {
  auto it = tenant.guests.find(name);
  if (it != tenant.guests.end()) return it->second.pool->settings();
  pool::PoolSettings settings{options.min_warm, options.max_vms};
  if (auto stored = store.loadSettings(tenant.config.name, name)) settings = *stored;
  // Stored settings were within the quota when set; the quota may have
  // shrunk since.
  settings.max_vms = std::clamp<uint32_t>(settings.max_vms, 1, tenant.config.quota.max_vms);
  settings.min_warm = std::min(settings.min_warm, settings.max_vms);
  return settings;
}

GuestEntry& ServiceContext::install(TenantState& tenant, const std::string& name,
                                    std::shared_ptr<pool::GuestPool> guest, std::string sha256, uint64_t size) {
  auto it = tenant.guests.find(name);
  if (it != tenant.guests.end()) {
    tenant.pool->removeGuest(it->second.pool);
    tenant.guests.erase(it);
  }
  tenant.pool->addGuest(guest);
  // A replaced guest's old VMs may have held the quota a full prewarm
  // needed; they are being retired, so top up in the background.
  guest->requestPrewarm();
  GuestEntry& entry = tenant.guests[name];
  entry = GuestEntry{std::move(guest), std::move(sha256), size};
  return entry;
}

void ServiceContext::beginWork() {
  ++in_flight_;
  signalActivity();
}

void ServiceContext::signalActivity() {
  ++activity_count_;
  KJ_IF_MAYBE(f, activity_fulfiller_) {
    (*f)->fulfill();
    activity_fulfiller_ = nullptr;
  }
}

kj::Promise<void> ServiceContext::nextActivity() {
  auto paf = kj::newPromiseAndFulfiller<void>();
  activity_fulfiller_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

void ServiceContext::endWork() {
  signalActivity();
  if (--in_flight_ == 0 && shutting_down_) {
    KJ_IF_MAYBE(f, idle_fulfiller_) { (*f)->fulfill(); }
    idle_fulfiller_ = nullptr;
  }
}

kj::Promise<void> ServiceContext::shutdown() {
  shutting_down_ = true;
  for (auto& tenant : tenants) tenant->pool->beginShutdown();
  if (in_flight_ == 0) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  idle_fulfiller_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

void ServiceContext::taskFailed(kj::Exception&& exception) {
  spdlog::error("event=background_task_failed error=\"{}\"", text::escapeUntrusted(exception.getDescription().cStr()));
}

}  // namespace sandpool::server
