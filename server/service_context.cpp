#include "server/service_context.h"

#include <algorithm>

#include <spdlog/spdlog.h>

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
                               std::vector<std::unique_ptr<TenantState>>& tenants)
    : options(options),
      vm_config(vm_config),
      backend(backend),
      store(store),
      mailbox(mailbox),
      blocking(blocking),
      tenants(tenants),
      background(*this) {}

GuestEntry& ServiceContext::install(TenantState& tenant, const std::string& name,
                                    std::shared_ptr<const vm::Snapshot> snapshot, std::string sha256,
                                    uint64_t size) {
  pool::PoolSettings settings{options.min_warm, std::min(options.max_vms, tenant.config.quota.max_vms)};
  settings.min_warm = std::min(settings.min_warm, settings.max_vms);
  auto it = tenant.guests.find(name);
  if (it != tenant.guests.end()) {
    settings = it->second.pool->settings();
    tenant.pool->removeGuest(it->second.pool);
    tenant.guests.erase(it);
  }
  auto guest = std::make_shared<pool::GuestPool>(*tenant.pool, name, std::move(snapshot), settings);
  tenant.pool->addGuest(guest);
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
  spdlog::error("event=background_task_failed error=\"{}\"", exception.getDescription().cStr());
}

}  // namespace sandpool::server
