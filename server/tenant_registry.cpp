#include "server/tenant_registry.h"

#include <fmt/format.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <utility>

#include <spdlog/spdlog.h>

#include "common/untrusted_text.h"
#include "vm/snapshot.h"
#include "wasm/module.h"

namespace sandpool::server {

namespace {

uint64_t ns(std::chrono::nanoseconds d) {
  return static_cast<uint64_t>(std::max<int64_t>(d.count(), 0));
}

vm::Expected<std::shared_ptr<const vm::Snapshot>> bootGuest(vm::Backend& backend,
                                                            std::span<const uint8_t> uploaded,
                                                            const vm::VmConfig& config) {
  auto image = guestImageFromUpload(uploaded, config);
  if (!image) return image.takeError();
  return vm::Snapshot::boot(backend, image.value(), config);
}

std::string describeName(const std::string& name) {
  return isValidName(name) ? name : std::string("(invalid name)");
}

Failure unknownGuest(const std::string& name) {
  return {FailureCode::kUnknownGuest, fmt::format("no guest '{}'", describeName(name))};
}

// What a call's task and its caller's side share. `answered` lives on the
// KJ thread (the task's delivery and the caller's promise both run there);
// `cancelled` is read by the worker running the call and its watchdog.
struct CallerState {
  std::atomic<bool> cancelled{false};  // the caller went away before its answer
  bool answered = false;               // the outcome was handed to the caller
};

// A call on its way through the pools, completed on the KJ thread through
// the mailbox: pool::CallTask's contract, with the outcome logged and handed
// to the RPC call's promise.
class MailboxCallTask final : public pool::CallTask, public KjMailbox::Message {
 public:
  MailboxCallTask(KjMailbox& mailbox, const TenantState& tenant,
                  kj::Own<kj::PromiseFulfiller<FinishedCall>> fulfiller,
                  std::unique_ptr<vm::HostFunctions> host_functions,
                  std::shared_ptr<GuestMetrics> metrics, std::shared_ptr<CallerState> caller)
      : mailbox_(mailbox),
        tenant_(tenant),
        fulfiller_(kj::mv(fulfiller)),
        host_functions_(std::move(host_functions)),
        metrics_(std::move(metrics)),
        caller_(std::move(caller)) {
    cancelled = std::shared_ptr<const std::atomic<bool>>(caller_, &caller_->cancelled);
  }
  ~MailboxCallTask() noexcept override {}

  vm::HostFunctions* hostFunctions() const { return host_functions_.get(); }

  // Any thread: hands the task to the KJ thread.
  void complete() override { mailbox_.post(this); }
  // KJ thread: logs and counts the outcome and fulfils the RPC call's
  // promise.
  void deliver() override {
    const std::chrono::nanoseconds total = pool::Clock::now() - received;
    logOutcome(total);
    metrics_->record(outcome, wasCancelled(), total);
    caller_->answered = true;
    fulfiller_->fulfill(FinishedCall{kj::mv(outcome), total});
  }

 private:
  // Successful calls only at debug, to keep the hot path quiet; failures
  // the server caused at error.
  void logOutcome(std::chrono::nanoseconds total) const {
    const std::string& tenant = tenant_.config.name;
    const std::string& guest_name = guest->name();
    // The client chose the function's name: escaped (and quoted) in every
    // log line, and only when a line is written.
    auto function = [this] { return text::escapeUntrusted(request.function); };
    if (outcome.refusal && outcome.refusal->kind == pool::RefusalKind::kCancelled) {
      spdlog::info("event=call_cancelled tenant={} guest={} function=\"{}\" ran=false", tenant,
                   guest_name, function());
      return;
    }
    if (!outcome.refusal && !outcome.call.result.ok() && wasCancelled()) {
      spdlog::info("event=call_cancelled tenant={} guest={} function=\"{}\" ran=true", tenant,
                   guest_name, function());
      return;
    }
    if (outcome.refusal) {
      auto level = outcome.refusal->kind == pool::RefusalKind::kNoVm ? spdlog::level::err
                                                                     : spdlog::level::debug;
      if (spdlog::should_log(level)) {
        spdlog::log(level, "event=call_refused tenant={} guest={} function=\"{}\" reason=\"{}\"",
                    tenant, guest_name, function(),
                    text::escapeUntrusted(outcome.refusal->message));
      }
      return;
    }
    if (outcome.call.result.ok()) {
      if (spdlog::should_log(spdlog::level::debug)) {
        spdlog::debug("event=call tenant={} guest={} function=\"{}\" total_us={} cold={}", tenant,
                      guest_name, function(), ns(total) / 1000, outcome.cold_start);
      }
      return;
    }
    const vm::Error& e = outcome.call.result.error();
    auto level = e.kind == vm::ErrorKind::kInternal || e.kind == vm::ErrorKind::kResetFailed
                     ? spdlog::level::err
                     : spdlog::level::info;
    spdlog::log(level, "event=call_failed tenant={} guest={} function=\"{}\" error=\"{}\"", tenant,
                guest_name, function(), text::escapeUntrusted(e.describe()));
  }

  KjMailbox& mailbox_;
  const TenantState& tenant_;
  kj::Own<kj::PromiseFulfiller<FinishedCall>> fulfiller_;
  std::unique_ptr<vm::HostFunctions> host_functions_;
  const std::shared_ptr<GuestMetrics> metrics_;
  const std::shared_ptr<CallerState> caller_;
};

// What the blocking pool reports of an upload.
struct UploadOutcome {
  std::optional<vm::Error> error;
  bool stored = false;                    // validation passed and the file is durable
  std::shared_ptr<pool::GuestPool> pool;  // the new version, prewarmed
  std::string sha256;
  uint64_t size = 0;
  VmSettings chosen_vm;
};

}  // namespace

vm::Expected<vm::GuestImage> guestImageFromUpload(std::span<const uint8_t> uploaded,
                                                  const vm::VmConfig& config) {
  return vm::GuestImage::parse(uploaded, config);
}

vm::Expected<std::vector<uint8_t>> TenantRegistry::imageFromUpload(const std::string& tenant,
                                                                   const std::string& guest,
                                                                   std::vector<uint8_t> bytes) {
  if (!wasm::isWasmModule(bytes)) return bytes;
  if (translator_ == nullptr) {
    return vm::makeError(
        vm::ErrorKind::kInvalidGuest,
        "Wasm modules cannot be translated on this server: its translator process did not start "
        "(the server's log says why)");
  }
  const std::string module_sha256 = sha256Hex(bytes);
  if (auto cached = translations_.find(module_sha256)) {
    spdlog::info("event=wasm_translation tenant={} guest={} module_sha256={} cached=true", tenant,
                 guest, module_sha256);
    return std::move(*cached);
  }
  const auto start = std::chrono::steady_clock::now();
  auto elf = translator_->guestImageFromUpload(std::move(bytes));
  if (!elf) return elf;
  spdlog::info("event=wasm_translation tenant={} guest={} module_sha256={} cached=false ms={}",
               tenant, guest, module_sha256,
               std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - start)
                   .count());
  translations_.insert(module_sha256, *elf);
  return elf;
}

TenantRegistry::TenantRegistry(const ServerOptions& options, vm::Backend& backend,
                               GuestStore& store, KjMailbox& mailbox,
                               boost::asio::thread_pool& blocking, InFlightWork& in_flight,
                               PoolFactory make_pool, std::vector<TenantConfig> tenants,
                               wasm::TranslatorService* translator)
    : options_(options),
      backend_(backend),
      translator_(translator),
      store_(store),
      mailbox_(mailbox),
      blocking_(blocking),
      in_flight_(in_flight),
      make_pool_(std::move(make_pool)),
      installs_(*this) {
  for (auto& config : tenants) tenants_.push_back(makeTenant(std::move(config)));
}

std::unique_ptr<TenantState> TenantRegistry::makeTenant(TenantConfig config) {
  auto tenant = std::make_unique<TenantState>();
  tenant->pool = make_pool_(config);
  tenant->config = std::move(config);
  return tenant;
}

void TenantRegistry::loadStoredGuests() {
  for (auto& tenant : tenants_) loadStoredGuests(*tenant);
}

void TenantRegistry::loadStoredGuests(TenantState& tenant) {
  std::vector<std::string> errors;
  auto stored = store_.loadAll(tenant.config.name, errors);
  for (const std::string& e : errors)
    spdlog::error("event=reload_refused {}", text::escapeUntrusted(e));
  for (auto& g : stored) {
    auto chosen_vm = store_.loadVmSettings(tenant.config.name, g.guest);
    if (!chosen_vm) {
      spdlog::error("event=reload_refused tenant={} guest={} error=\"{}\"", tenant.config.name,
                    g.guest, text::escapeUntrusted(chosen_vm.error().describe()));
      continue;
    }
    // Stored settings were within the limits when chosen; the flags apply
    // to requests, so a guest keeps booting as it was configured.
    const VmSettings vm_settings = chosen_vm->over(defaultVmSettings(options_));
    auto snapshot = bootGuest(backend_, g.elf, vmConfigFor(vm_settings, options_));
    if (!snapshot) {
      spdlog::error("event=reload_refused tenant={} guest={} error=\"{}\"", tenant.config.name,
                    g.guest, text::escapeUntrusted(snapshot.error().describe()));
      continue;
    }
    auto guest =
        std::make_shared<pool::GuestPool>(*tenant.pool, g.guest, std::move(snapshot.value()),
                                          settingsFor(tenant, g.guest, vm_settings.memory_bytes));
    guest->prewarmNow();
    install(tenant, g.guest, GuestEntry{std::move(guest), g.sha256, g.elf.size(), *chosen_vm});
    spdlog::info("event=reload tenant={} guest={} sha256={}", tenant.config.name, g.guest,
                 g.sha256);
  }
}

void TenantRegistry::applyTenants(std::vector<TenantConfig> configs) {
  for (auto& tenant : tenants_) {
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
      spdlog::warn(
          "event=quota_unchanged tenant={} reason=\"quota changes take effect at restart\"",
          tenant->config.name);
    }
    configs.erase(it);
  }
  for (auto& config : configs) {
    auto tenant = makeTenant(std::move(config));
    spdlog::info("event=tenant_added tenant={}", tenant->config.name);
    loadStoredGuests(*tenant);
    tenants_.push_back(std::move(tenant));
  }
}

TenantState* TenantRegistry::login(std::string_view token, const std::string& peer) {
  // Compare against every token in constant time, so that timing reveals
  // neither which tenant matched nor how much of a token was right.
  TenantState* match = nullptr;
  for (auto& tenant : tenants_) {
    const std::string& expected = tenant->config.token;
    bool same = tenant->enabled && token.size() == expected.size() &&
                CRYPTO_memcmp(token.data(), expected.data(), expected.size()) == 0;
    if (same) match = tenant.get();
  }
  if (match == nullptr) {
    ++logins_refused_;
    spdlog::warn("event=login_refused peer={}", peer);
  } else {
    spdlog::info("event=login tenant={} peer={}", match->config.name, peer);
  }
  return match;
}

std::optional<Failure> TenantRegistry::checkUpload(const TenantState& tenant,
                                                   const std::string& name, size_t bytes,
                                                   bool replace) const {
  if (in_flight_.shuttingDown())
    return Failure{FailureCode::kShuttingDown, "the server is shutting down"};
  if (!isValidName(name)) {
    return Failure{FailureCode::kInvalidArgument,
                   "guest name must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'"};
  }
  if (bytes > options_.max_upload_bytes) {
    return Failure{FailureCode::kTooLarge,
                   fmt::format("guest ELF is {} bytes; this server accepts at most {}", bytes,
                               options_.max_upload_bytes)};
  }
  const bool exists = tenant.guests.count(name) != 0;
  if (tenant.uploading.count(name) != 0) {
    return Failure{FailureCode::kInvalidArgument,
                   fmt::format("an upload of guest '{}' is already in progress", name)};
  }
  if (exists && !replace) {
    return Failure{FailureCode::kGuestExists,
                   fmt::format("guest '{}' exists; upload with replace to overwrite it", name)};
  }
  if (!exists && tenant.guests.size() + tenant.uploading.size() >= tenant.config.quota.max_guests) {
    return Failure{FailureCode::kQuotaExceeded, fmt::format("tenant may hold at most {} guests",
                                                            tenant.config.quota.max_guests)};
  }
  return std::nullopt;
}

kj::Promise<OrFailure<GuestEntry>> TenantRegistry::upload(TenantState& tenant,
                                                          const std::string& name,
                                                          std::span<const uint8_t> uploaded,
                                                          bool replace, VmSettings requested_vm) {
  auto refuse = [&](Failure refused) {
    spdlog::warn("event=upload_refused tenant={} guest={} code={} reason=\"{}\"",
                 tenant.config.name, isValidName(name) ? name : "(invalid)",
                 static_cast<int>(refused.code), text::escapeUntrusted(refused.message));
    return OrFailure<GuestEntry>(std::move(refused));
  };
  if (auto refused = checkUpload(tenant, name, uploaded.size(), replace))
    return refuse(std::move(*refused));
  auto old = tenant.guests.find(name);
  const VmSettings chosen_vm =
      old != tenant.guests.end() ? requested_vm.over(old->second.chosen_vm) : requested_vm;
  // Pool settings follow the VM memory (their VMs must fit the memory
  // quota), so the memory is checked alone first.
  auto one_vm = resolveVm(tenant, chosen_vm, 1);
  if (!one_vm.ok()) return refuse(one_vm.failure());

  tenant.uploading.insert(name);
  std::vector<uint8_t> bytes(uploaded.begin(), uploaded.end());
  NewVersion version;
  version.image = [this, tenant_name = tenant.config.name, name,
                   bytes = std::move(bytes)]() mutable {
    return imageFromUpload(tenant_name, name, std::move(bytes));
  };
  version.store_image = true;
  version.chosen_vm = chosen_vm;
  version.vm = one_vm.value();
  version.pool = settingsFor(tenant, name, version.vm.memory_bytes);
  version.event = "upload";
  version.boot_refused = FailureCode::kInvalidGuest;
  return installNewVersion(tenant, name, std::move(version));
}

kj::Promise<OrFailure<GuestEntry>> TenantRegistry::installNewVersion(TenantState& tenant,
                                                                     const std::string& name,
                                                                     NewVersion version) {
  WorkGuard work = in_flight_.begin();
  const pool::PoolSettings pool_settings = version.pool;
  const vm::VmConfig config = vmConfigFor(version.vm, options_);
  const FailureCode boot_refused = version.boot_refused;
  const char* event = version.event;
  auto boot_and_store = [this, &tenant, name, config, pool_settings,
                         version = std::move(version)]() -> std::shared_ptr<UploadOutcome> {
    auto out = std::make_shared<UploadOutcome>();
    auto image = version.image();
    if (!image) {
      out->error = image.takeError();
      return out;
    }
    out->size = image->size();
    auto snapshot = bootGuest(backend_, *image, config);
    if (!snapshot) {
      out->error = snapshot.takeError();
      return out;
    }
    out->sha256 = sha256Hex(*image);
    const std::string& tenant_name = tenant.config.name;
    auto stored =
        version.store_image ? store_.save(tenant_name, name, *image) : vm::Expected<void>();
    if (stored && version.store_pool)
      stored = store_.saveSettings(tenant_name, name, *version.store_pool);
    if (stored) stored = store_.saveVmSettings(tenant_name, name, version.chosen_vm);
    if (!stored) {
      out->error = stored.takeError();
      return out;
    }
    out->stored = true;
    // The answer waits for the warm VMs, so the first call is not a cold start.
    out->pool = std::make_shared<pool::GuestPool>(*tenant.pool, name, std::move(snapshot.value()),
                                                  pool_settings);
    out->pool->prewarmNow();
    out->chosen_vm = version.chosen_vm;
    return out;
  };
  // The install step runs even if the client disconnects meanwhile: the
  // file is on disk, so the registry must agree with it. The work stops
  // counting once the blocking pool answered, before the install.
  auto installed =
      tenant.boot_gate.enter()
          .then([this, boot_and_store = std::move(boot_and_store)]() mutable {
            return runBlocking<std::shared_ptr<UploadOutcome>>(mailbox_, blocking_,
                                                               std::move(boot_and_store));
          })
          .attach(kj::mv(work))
          .then([this, &tenant, name, event](std::shared_ptr<UploadOutcome> out) {
            tenant.boot_gate.leave();
            tenant.uploading.erase(name);
            if (!out->stored) {
              spdlog::warn("event={}_refused tenant={} guest={} error=\"{}\"", event,
                           tenant.config.name, name, text::escapeUntrusted(out->error->describe()));
              return out;
            }
            const vm::VmConfig& config = out->pool->snapshot().config();
            install(tenant, name, GuestEntry{out->pool, out->sha256, out->size, out->chosen_vm});
            spdlog::info(
                "event={} tenant={} guest={} bytes={} sha256={} exports={} memory_bytes={} "
                "stack_bytes={} input_bytes={} output_bytes={} max_host_calls={}",
                event, tenant.config.name, name, out->size, out->sha256,
                out->pool->snapshot().exports().size(), config.memory_size, config.stack_size,
                config.input_size, config.output_size, config.max_host_calls);
            const uint32_t warm = out->pool->stats().warm,
                           min_warm = out->pool->settings().min_warm;
            if (warm < min_warm) {
              spdlog::warn(
                  "event=upload_short_of_min_warm tenant={} guest={} warm={} min_warm={} "
                  "reason=\"the "
                  "tenant's VM quota ({} VMs) is in use by its other guests; calls take their idle "
                  "VMs\"",
                  tenant.config.name, name, warm, min_warm, tenant.config.quota.max_vms);
            }
            return out;
          })
          .fork();
  installs_.add(installed.addBranch().ignoreResult());
  return installed.addBranch().then(
      [&tenant, name, boot_refused](std::shared_ptr<UploadOutcome> out) -> OrFailure<GuestEntry> {
        if (out->stored) {
          auto it = tenant.guests.find(name);
          if (it != tenant.guests.end()) return it->second;
          return Failure{FailureCode::kUnknownGuest,
                         fmt::format("guest '{}' was removed while its upload finished", name)};
        }
        if (out->error->kind == vm::ErrorKind::kInternal) {
          return Failure{FailureCode::kInternal,
                         "could not store the guest; the server's log has the details"};
        }
        // Validation and boot errors describe the ELF, not the host.
        return Failure{boot_refused, out->error->message};
      });
}

kj::Promise<std::optional<Failure>> TenantRegistry::remove(TenantState& tenant,
                                                           const std::string& name) {
  auto it = tenant.guests.find(name);
  if (it == tenant.guests.end()) return std::optional<Failure>(unknownGuest(name));
  if (tenant.uploading.count(name) != 0) {
    return std::optional<Failure>(
        Failure{FailureCode::kInvalidArgument,
                fmt::format("an upload of guest '{}' is in progress", name)});
  }
  tenant.pool->removeGuest(it->second.pool);
  tenant.guests.erase(it);
  std::string tenant_name = tenant.config.name;
  return writeStore([this, tenant_name, name] { return store_.remove(tenant_name, name); })
      .attach(in_flight_.begin())
      .then([tenant_name, name](std::optional<vm::Error> error) -> std::optional<Failure> {
        if (error) {
          spdlog::error("event=remove_failed tenant={} guest={} error=\"{}\"", tenant_name, name,
                        text::escapeUntrusted(error->describe()));
          return Failure{FailureCode::kInternal,
                         "could not delete the stored guest; the server's log has the details"};
        }
        spdlog::info("event=remove tenant={} guest={}", tenant_name, name);
        return std::nullopt;
      });
}

kj::Promise<OrFailure<GuestEntry>> TenantRegistry::configure(
    TenantState& tenant, const std::string& name, std::optional<pool::PoolSettings> requested,
    VmSettings requested_vm) {
  using Answer = OrFailure<GuestEntry>;
  auto it = tenant.guests.find(name);
  if (it == tenant.guests.end()) return Answer(unknownGuest(name));
  if (in_flight_.shuttingDown())
    return Answer(Failure{FailureCode::kShuttingDown, "the server is shutting down"});
  if (tenant.uploading.count(name) != 0) {
    return Answer(
        Failure{FailureCode::kInvalidArgument,
                fmt::format("an upload or reconfiguration of guest '{}' is in progress", name)});
  }
  const pool::PoolSettings settings = requested.value_or(it->second.pool->settings());
  if (settings.max_vms == 0 || settings.min_warm > settings.max_vms) {
    return Answer(
        Failure{FailureCode::kInvalidArgument,
                fmt::format("need 1 <= maxVms and minWarm <= maxVms, got minWarm {}, maxVms {}",
                            settings.min_warm, settings.max_vms)});
  }
  if (settings.max_vms > tenant.config.quota.max_vms) {
    return Answer(Failure{FailureCode::kQuotaExceeded,
                          fmt::format("maxVms {} exceeds the tenant's quota of {} VMs",
                                      settings.max_vms, tenant.config.quota.max_vms)});
  }
  const VmSettings chosen_vm = requested_vm.over(it->second.chosen_vm);
  auto resolved = resolveVm(tenant, chosen_vm, settings.max_vms);
  if (!resolved.ok()) return Answer(resolved.failure());

  if (!(resolved.value() == vmSettingsOf(it->second.pool->snapshot().config()))) {
    tenant.uploading.insert(name);
    NewVersion version;
    version.image = [this, tenant_name = tenant.config.name,
                     name]() -> vm::Expected<std::vector<uint8_t>> {
      auto stored = store_.load(tenant_name, name);
      if (!stored) return stored.takeError();
      return std::move(stored->elf);
    };
    version.store_pool = requested;
    version.chosen_vm = chosen_vm;
    version.vm = resolved.value();
    version.pool = settings;
    version.event = "configure";
    version.boot_refused = FailureCode::kInvalidArgument;
    return installNewVersion(tenant, name, std::move(version));
  }

  it->second.pool->setSettings(settings);
  it->second.chosen_vm = chosen_vm;
  // The answer waits for the settings to be on disk, so a restart keeps
  // them; the pool uses them already.
  std::string tenant_name = tenant.config.name;
  return writeStore([this, tenant_name, name, requested, chosen_vm]() -> vm::Expected<void> {
           if (requested) {
             if (auto saved = store_.saveSettings(tenant_name, name, *requested); !saved)
               return saved;
           }
           return store_.saveVmSettings(tenant_name, name, chosen_vm);
         })
      .attach(in_flight_.begin())
      .then([&tenant, tenant_name, name, settings](std::optional<vm::Error> error) -> Answer {
        if (error) {
          spdlog::error("event=configure_failed tenant={} guest={} error=\"{}\"", tenant_name, name,
                        text::escapeUntrusted(error->describe()));
          return Failure{FailureCode::kInternal,
                         "could not store the settings; the server's log has the details"};
        }
        spdlog::info("event=configure tenant={} guest={} min_warm={} max_vms={}", tenant_name, name,
                     settings.min_warm, settings.max_vms);
        auto configured = tenant.guests.find(name);
        if (configured == tenant.guests.end()) return unknownGuest(name);
        return configured->second;
      });
}

OrFailure<VmSettings> TenantRegistry::resolveVm(const TenantState& tenant, const VmSettings& chosen,
                                                uint32_t max_vms) const {
  const VmSettings settings = chosen.over(defaultVmSettings(options_));
  if (auto bad = checkVmSettings(settings, options_))
    return Failure{FailureCode::kInvalidArgument, *bad};
  const uint64_t quota = tenant.config.quota.max_memory_bytes;
  if (settings.memory_bytes > quota / max_vms) {
    return Failure{
        FailureCode::kQuotaExceeded,
        fmt::format(
            "{} VMs (maxVms) of {} MiB (memoryBytes) exceed the tenant's memory quota of {} MiB",
            max_vms, settings.memory_bytes >> 20, quota >> 20)};
  }
  return settings;
}

pool::Clock::time_point TenantRegistry::callDeadline(pool::Clock::time_point received,
                                                     uint32_t timeout_ms) const {
  std::chrono::nanoseconds timeout = options_.call_timeout;
  if (timeout_ms != 0)
    timeout = std::min<std::chrono::nanoseconds>(timeout, std::chrono::milliseconds(timeout_ms));
  return received + timeout;
}

kj::Promise<FinishedCall> TenantRegistry::call(TenantState& tenant, const GuestEntry& guest,
                                               GuestCall call) {
  auto paf = kj::newPromiseAndFulfiller<FinishedCall>();
  auto caller = std::make_shared<CallerState>();
  auto* task = new MailboxCallTask(mailbox_, tenant, kj::mv(paf.fulfiller),
                                   std::move(call.host_functions), guest.metrics, caller);
  task->guest = guest.pool;
  task->request = std::move(call.request);
  task->request.host_functions = task->hostFunctions();
  task->received = call.received;
  task->deadline = call.deadline;
  // The RPC promise is dropped when the caller cancels the call or its
  // connection goes away (runCall allows it): the call is then dropped if
  // it has not started, and stopped if it runs. The promise is dropped
  // after every answer too: then nothing is left to cancel, and the
  // watchdog is left asleep (a poke per call cost a call at concurrency 1
  // several microseconds on 2 cores, docs/performance.md).
  if (in_flight_.shuttingDown()) {
    task->outcome.refusal =
        pool::Refusal{pool::RefusalKind::kShuttingDown, "the server is shutting down"};
    task->complete();
  } else {
    tenant.pool->submit(task);
  }
  return paf.promise.attach(in_flight_.begin(), kj::defer([this, caller = std::move(caller)] {
                              if (caller->answered) return;
                              caller->cancelled.store(true);
                              // A running call is stopped at the watchdog's
                              // next look: now.
                              backend_.watchdog().poke();
                            }));
}

OrFailure<const GuestEntry*> TenantRegistry::guest(const TenantState& tenant,
                                                   const std::string& name) const {
  auto it = tenant.guests.find(name);
  if (it == tenant.guests.end()) return unknownGuest(name);
  return &it->second;
}

void TenantRegistry::visitStats(const TenantState& tenant, StatsVisitor& visitor) const {
  visitor.tenant(tenant.config, tenant.pool->counters(), tenant.guests.size());
  for (const auto& [name, entry] : tenant.guests) visitor.guest(name, entry.pool->stats());
}

void TenantRegistry::beginShutdown() {
  for (auto& tenant : tenants_) tenant->pool->beginShutdown();
}

void TenantRegistry::stopPools() {
  for (auto& tenant : tenants_) tenant->pool->stop();
}

pool::PoolSettings TenantRegistry::settingsFor(const TenantState& tenant, const std::string& name,
                                               uint64_t memory_bytes) const {
  auto it = tenant.guests.find(name);
  if (it != tenant.guests.end()) return it->second.pool->settings();
  pool::PoolSettings settings{options_.min_warm, options_.max_vms};
  if (auto stored = store_.loadSettings(tenant.config.name, name)) settings = *stored;
  // Stored settings were within the quota when set; the quota may have
  // shrunk since.
  const uint64_t vms_in_memory = tenant.config.quota.max_memory_bytes / memory_bytes;
  settings.max_vms = std::clamp<uint32_t>(
      settings.max_vms, 1,
      static_cast<uint32_t>(std::min<uint64_t>(tenant.config.quota.max_vms, vms_in_memory)));
  settings.min_warm = std::min(settings.min_warm, settings.max_vms);
  return settings;
}

void TenantRegistry::install(TenantState& tenant, const std::string& name, GuestEntry entry) {
  auto it = tenant.guests.find(name);
  if (it != tenant.guests.end()) {
    entry.metrics = it->second.metrics;
    tenant.pool->removeGuest(it->second.pool);
    tenant.guests.erase(it);
  }
  tenant.pool->addGuest(entry.pool);
  // A replaced guest's old VMs may have held the quota a full prewarm
  // needed; they are being retired, so top up in the background.
  entry.pool->requestPrewarm();
  tenant.guests[name] = std::move(entry);
}

kj::Promise<std::optional<vm::Error>> TenantRegistry::writeStore(
    std::function<vm::Expected<void>()> write) {
  return runBlocking<std::optional<vm::Error>>(
      mailbox_, blocking_, [write = std::move(write)]() -> std::optional<vm::Error> {
        auto written = write();
        if (!written) return written.takeError();
        return std::nullopt;
      });
}

void TenantRegistry::taskFailed(kj::Exception&& exception) {
  spdlog::error("event=background_task_failed error=\"{}\"",
                text::escapeUntrusted(exception.getDescription().cStr()));
}

}  // namespace sandpool::server
