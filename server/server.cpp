#include "server/server.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <spdlog/spdlog.h>

#include "common/untrusted_text.h"
#include "pool/scheduler.h"
#include "pool/spin_wait.h"
#include "pool/tenant_pool.h"
#include "server/activity_cue.h"
#include "server/guest_store.h"
#include "server/privileges.h"
#include "server/in_flight_work.h"
#include "server/kj_mailbox.h"
#include "server/metrics_page.h"
#include "server/metrics_server.h"
#include "server/rpc_host_functions.h"
#include "server/rpc_listener.h"
#include "server/sandpool_service.h"
#include "server/tenant_registry.h"
#include "server/tenants_file.h"
#include "vm/backend.h"
#include "vm/host_limits.h"
#include "vm/syscall_filter.h"
#include "wasm/translator_service.h"
#include "vm/unique_fd.h"

namespace sandpool::server {

namespace fs = std::filesystem;

namespace {

class LogTaskFailures final : public kj::TaskSet::ErrorHandler {
 public:
  explicit LogTaskFailures(const char* event) : event_(event) {}
  void taskFailed(kj::Exception&& exception) override {
    spdlog::error("event={} error=\"{}\"", event_,
                  text::escapeUntrusted(exception.getDescription().cStr()));
  }

 private:
  const char* event_;
};

// One step of the shutdown, run when the member holding it is destroyed:
// its place among Server's members says when.
class ShutdownStep {
 public:
  explicit ShutdownStep(std::function<void()> step) : step_(std::move(step)) {}
  ShutdownStep(const ShutdownStep&) = delete;
  ShutdownStep& operator=(const ShutdownStep&) = delete;
  ~ShutdownStep() { step_(); }

 private:
  std::function<void()> step_;
};

// A socket file left by a server that died is in the way of bind(); one
// that still accepts belongs to a live server and must not be taken over,
// and a file of any other kind is not ours to delete. Returns false only in
// the live-server case.
bool clearStaleSocket(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return true;
  vm::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return true;  // bind() reports the length itself
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (fd.valid() && ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
    return false;
  ::unlink(path.c_str());
  return true;
}

// The Unix socket path as given, made absolute against the data directory.
std::string unixSocketPath(const ServerOptions& options) {
  fs::path p(options.listen_unix);
  if (p.is_relative()) p = fs::absolute(fs::path(options.data_dir) / p);
  return p.string();
}

ConnectionLimits connectionLimits(const ServerOptions& options) {
  return {.max_connections = options.max_connections,
          .max_connections_per_peer = options.max_connections_per_peer,
          .login_timeout = options.login_timeout.count() * kj::MILLISECONDS,
          .idle_timeout = options.connection_idle_timeout.count() * kj::MILLISECONDS,
          .flow_limit_words = options.rpc_flow_limit_bytes / sizeof(capnp::word),
          .messages = {
              .login_message_words = options.rpc_login_message_limit_bytes / sizeof(capnp::word),
              .message_words = options.rpcMessageLimit() / sizeof(capnp::word),
              .max_caps_per_message = options.rpc_max_caps_per_message,
              .max_imports = options.rpc_max_imports}};
}

// The workers' options; with a filter mode, each worker installs the
// guest-thread system-call filter as it starts.
pool::SchedulerOptions schedulerOptions(const ServerOptions& options, vm::BackendKind backend,
                                        std::optional<vm::FilterMode> filter_mode) {
  pool::SchedulerOptions scheduler{options.workers, options.worker_spin, options.long_call,
                                   options.max_long_calls, options.max_long_calls_per_tenant};
  if (filter_mode) {
    scheduler.thread_setup = [backend, mode = *filter_mode] {
      if (auto restricted = vm::restrictGuestThread(backend, mode); !restricted) {
        // A worker without its filter would run guests unguarded.
        spdlog::critical("event=syscall_filter_failed thread=worker error=\"{}\"",
                         restricted.error().describe());
        std::abort();
      }
    };
  }
  return scheduler;
}

// sandpoold, the composition root. The members are declared in the order
// the parts depend on each other, so construction builds each part after
// what it uses, and destruction, in reverse, is the shutdown order of
// docs/server.md ("Shutdown"): the threads that post to the KJ loop stop
// first (the ShutdownSteps at the end), then what they posted is
// delivered, the connections closed and the Unix socket removed, and the KJ
// loop goes last. serve() does the steps before them: stop accepting, and
// wait for the work in flight within the grace period.
//
// Thread: the KJ thread (the one that constructs it).
class Server {
 public:
  Server(const ServerOptions& options, fs::file_time_type started,
         std::unique_ptr<vm::Backend> backend, std::vector<TenantConfig> tenants,
         std::optional<vm::FilterMode> filter_mode, wasm::TranslatorService* translator,
         std::optional<RunAs> run_as)
      : options_(options),
        started_(started),
        run_as_(std::move(run_as)),
        kj_io_(kj::setupAsyncIo()),
        mailbox_(kj_io_.unixEventPort),
        backend_(std::move(backend)),
        store_(fs::path(options.data_dir) / "guests"),
        scheduler_(schedulerOptions(options, backend_->kind(), filter_mode)),
        strand_io_(1),
        strand_io_work_(boost::asio::make_work_guard(strand_io_)),
        // Uploads boot their guest here, one at a time per tenant (BootGate):
        // a thread per tenant at start and one more, so that no tenant's
        // uploads, whose initialisation may spin until the boot timeout, hold
        // every thread.
        blocking_(std::clamp<size_t>(tenants.size() + 1, 2, 64)),
        in_flight_(activity_),
        registry_(
            options, *backend_, store_, mailbox_, blocking_, in_flight_,
            [this](const TenantConfig& config) {
              return std::make_unique<pool::TenantPool>(
                  scheduler_, *backend_, strand_io_, config.name, config.quota, options_.idle_time);
            },
            std::move(tenants), translator),
        host_call_tasks_(host_call_failures_),
        host_calls_(mailbox_, host_call_tasks_),
        loops_(loop_failures_),
        listener_(
            [this](const std::string& peer,
                   kj::Own<ConnectionStatus> connection) -> capnp::Capability::Client {
              return kj::heap<SandpoolImpl>(registry_, host_calls_, peer, kj::mv(connection));
            },
            kj_io_.provider->getNetwork(), kj_io_.provider->getTimer(), connectionLimits(options)) {
    scheduler_.start();
    strand_thread_ = std::thread([this] { strand_io_.run(); });
    if (!options_.listen_metrics.empty()) {
      metrics_.emplace(mailbox_, [this] {
        return takeMetricsSnapshot(registry_, listener_.connectionCounts());
      });
    }
  }

  // Loads the stored guests, listens, serves until SIGTERM or SIGINT, and
  // waits for the work in flight. Returns the process's exit code.
  int serve();

 private:
  kj::Promise<void> reloadOnHangup();
  int serveUntilSignal();

  const ServerOptions& options_;
  const fs::file_time_type started_;   // temporaries older than this are stale
  const std::optional<RunAs> run_as_;  // dropped to once the listeners are up
  kj::AsyncIoContext kj_io_;
  KjMailbox mailbox_;
  std::unique_ptr<vm::Backend> backend_;
  GuestStore store_;
  pool::Scheduler scheduler_;
  boost::asio::io_context strand_io_;  // the tenants' strands
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> strand_io_work_;
  boost::asio::thread_pool blocking_;
  ActivityCue activity_;
  InFlightWork in_flight_;
  TenantRegistry registry_;
  LogTaskFailures host_call_failures_{"background_task_failed"};
  kj::TaskSet host_call_tasks_;
  HostCallForwarder host_calls_;
  LogTaskFailures loop_failures_{"task_failed"};
  kj::TaskSet loops_;      // the mailbox's delivery loop, SIGHUP
  std::string unix_path_;  // ours to remove at exit once set
  ShutdownStep remove_unix_socket_{[this] {
    kj_io_.waitScope.poll();
    if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
  }};
  RpcListener listener_;
  ShutdownStep close_connections_{[this] { listener_.closeConnections(); }};
  // What the threads below posted is delivered while the KJ loop still
  // exists, and the replies flushed.
  ShutdownStep deliver_posted_{[this] {
    mailbox_.drainNow();
    kj_io_.waitScope.poll();
  }};
  std::thread strand_thread_;
  ShutdownStep stop_strands_{[this] {
    registry_.stopPools();
    strand_io_work_.reset();
    if (strand_thread_.joinable()) strand_thread_.join();
  }};
  // Queued uploads and file writes finish first.
  ShutdownStep join_blocking_{[this] { blocking_.join(); }};
  ShutdownStep stop_workers_{[this] { scheduler_.stop(); }};
  // Stops first: its scrapes post to the mailbox and read the registry and
  // the listener.
  std::optional<MetricsServer> metrics_;
};

// SIGHUP: re-read the tenants file (token rotation, tenants added or
// removed). A file that fails to parse changes nothing.
kj::Promise<void> Server::reloadOnHangup() {
  return kj_io_.unixEventPort.onSignal(SIGHUP).then([this](siginfo_t) {
    auto configs = loadTenantsFile(options_.tenants_file, options_.queue_length);
    if (!configs) {
      spdlog::error("event=tenants_reload_failed error=\"{}\"", configs.error().message);
    } else {
      registry_.applyTenants(std::move(configs.value()));
      spdlog::info("event=tenants_reloaded tenants={}", registry_.tenantCount());
    }
    return reloadOnHangup();
  });
}

// Runs the KJ loop until SIGTERM or SIGINT and returns the signal.
//
// While calls are out on the workers the loop busy-polls (for at most
// --rpc-spin-us without progress) instead of sleeping in epoll: a reply then
// reaches its client without the sleep/wake-up of the RPC thread, which
// costs more than the call itself. A turn that delivered a reply or started
// or finished a call goes straight on to the next one. Only an idle turn
// waits: eagerly while the pools are lightly loaded, politely (yielding the
// CPU) while calls queue, so that it never keeps a worker or a client off
// an oversubscribed core, and not at all while long calls run set aside
// (pool::SpinWait). Under load every call passes
// through this thread: yielding its core after a turn that had work only
// delays the next (docs/performance.md). With nothing in flight it sleeps.
int Server::serveUntilSignal() {
  const std::chrono::microseconds spin = options_.rpc_spin;
  int received = 0;
  auto signal = kj_io_.unixEventPort.onSignal(SIGTERM)
                    .exclusiveJoin(kj_io_.unixEventPort.onSignal(SIGINT))
                    .then([&received](siginfo_t info) { received = info.si_signo; })
                    .fork();
  while (received == 0) {
    if (spin.count() > 0 && in_flight_.count() > 0) {
      mailbox_.beginSpin();
      pool::SpinWait wait(spin, scheduler_.spinMode());
      bool idle = false;
      while (received == 0 && in_flight_.count() > 0 && (!idle || wait.turn())) {
        const uint64_t before = activity_.count();
        const bool delivered = mailbox_.drainIfAny();
        kj_io_.waitScope.poll();
        idle = !delivered && activity_.count() == before;
        if (!idle) wait.restart(scheduler_.spinMode());
      }
      mailbox_.endSpin();
      kj_io_.waitScope.poll();
      if (received != 0) break;
    }
    signal.addBranch().exclusiveJoin(activity_.next()).wait(kj_io_.waitScope);
  }
  return received;
}

int Server::serve() {
  // Before the stored guests load, so that /healthz answers and /readyz
  // says "starting" meanwhile; and while the process may still bind
  // privileged ports.
  std::string metrics_address;
  if (metrics_) {
    auto bound = metrics_->listen(options_.listen_metrics);
    if (!bound) {
      spdlog::critical("event=start_failed step=listen_metrics error=\"{}\"",
                       bound.error().message);
      return 1;
    }
    metrics_address = fmt::format(" metrics={}", bound.value());
  }
  registry_.loadStoredGuests();
  loops_.add(mailbox_.run());
  loops_.add(reloadOnHangup());

  std::string ready = "sandpoold ready";
  try {
    if (!options_.listen_tcp.empty()) {
      ready += fmt::format(" tcp={}", listener_.listen(options_.listen_tcp).wait(kj_io_.waitScope));
    }
    if (!options_.listen_unix.empty()) {
      std::string path = unixSocketPath(options_);
      if (!clearStaleSocket(path)) {
        throw KJ_EXCEPTION(FAILED, "another process is serving on the Unix socket", path.c_str());
      }
      listener_.listen("unix:" + path).wait(kj_io_.waitScope);
      unix_path_ = path;
      ready += fmt::format(" unix={}", unix_path_);
    }
  } catch (const kj::Exception& e) {
    spdlog::critical("event=start_failed step=listen error=\"{}\"", e.getDescription().cStr());
    return 1;
  }
  if (run_as_) {
    // The socket, bound as root, goes to the user that serves it.
    if (!unix_path_.empty() && ::lchown(unix_path_.c_str(), run_as_->uid, run_as_->gid) != 0) {
      spdlog::critical("event=start_failed step=privileges error=\"chown {}: {}\"", unix_path_,
                       std::strerror(errno));
      return 1;
    }
    if (auto dropped = dropPrivileges(*run_as_, options_.allow_core_dumps); !dropped) {
      spdlog::critical("event=start_failed step=privileges error=\"{}\"", dropped.error().message);
      return 1;
    }
    spdlog::info("event=privileges_dropped user={} uid={} gid={}", run_as_->user, run_as_->uid,
                 run_as_->gid);
  }

  // Only once the listeners are up: a second sandpoold started on this data
  // directory by mistake stops at its Unix socket (by default in the data
  // directory) before it could delete the temporary file of an upload the
  // first one is writing. Files written since `started_` are this
  // process's own.
  for (const auto& stale : store_.removeStaleTemporaries(started_)) {
    if (stale.error) {
      spdlog::error("event=stale_temporary_kept path=\"{}\" bytes={} error=\"{}\"",
                    text::escapeUntrusted(stale.path.string()), stale.bytes, *stale.error);
    } else {
      spdlog::info("event=stale_temporary_removed path=\"{}\" bytes={}",
                   text::escapeUntrusted(stale.path.string()), stale.bytes);
    }
  }
  ready += metrics_address;
  if (metrics_) metrics_->setReadiness(MetricsServer::Readiness::kReady);
  spdlog::info("event=ready workers={} tenants={} {}", options_.workers, registry_.tenantCount(),
               ready);
  std::printf("%s\n", ready.c_str());
  std::fflush(stdout);

  int signal = serveUntilSignal();
  spdlog::info("event=shutdown_begin signal={} in_flight={}", signal, in_flight_.count());
  if (metrics_) metrics_->setReadiness(MetricsServer::Readiness::kDraining);

  listener_.stopAccepting();
  auto drained = in_flight_.shutdown();
  registry_.beginShutdown();
  bool clean =
      drained.then([] { return true; })
          .exclusiveJoin(kj_io_.provider->getTimer()
                             .afterDelay(options_.shutdown_grace.count() * kj::MILLISECONDS)
                             .then([] { return false; }))
          .wait(kj_io_.waitScope);
  spdlog::info("event=shutdown_drained clean={} in_flight={}", clean, in_flight_.count());
  return 0;
}

}  // namespace

void captureSignals() {
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  kj::UnixEventPort::captureSignal(SIGHUP);
  // A client that vanishes mid-write must not kill the server.
  ::signal(SIGPIPE, SIG_IGN);
}

int runServer(const ServerOptions& options) {
  const fs::file_time_type started = fs::file_time_type::clock::now();
  if (auto restricted = restrictProcessPrivileges(options.allow_core_dumps); !restricted) {
    spdlog::critical("event=start_failed step=privileges error=\"{}\"", restricted.error().message);
    return 1;
  }
  auto run_as = resolveRunAs(options.user, options.allow_root);
  if (!run_as) {
    spdlog::critical("event=start_failed step=privileges error=\"{}\"", run_as.error().message);
    return 1;
  }
  auto tenant_configs = loadTenantsFile(options.tenants_file, options.queue_length);
  if (!tenant_configs) {
    spdlog::critical("event=start_failed step=tenants error=\"{}\"",
                     tenant_configs.error().message);
    return 1;
  }
  vm::BackendChoice choice;
  if (!vm::parseBackendChoice(options.backend, choice)) {
    spdlog::critical("event=start_failed step=backend error=\"unknown backend '{}'\"",
                     options.backend);
    return 1;
  }
  vm::KvmOptions kvm_options;
  if (!vm::parseKvmSpeedCheck(options.kvm_speed_check, kvm_options)) {
    spdlog::critical(
        "event=start_failed step=backend error=\"--kvm-speed-check takes require or waive, not "
        "'{}'\"",
        options.kvm_speed_check);
    return 1;
  }
  // Each guest holds files and each VM mappings (and, on KVM, files): a VM
  // that would pass either limit is refused (vm/host_limits.h).
  if (auto files = vm::raiseFileLimit(); !files) {
    spdlog::warn("event=file_limit_not_raised error=\"{}\"", files.error().message);
  }
  if (auto usage = vm::readHostUsage(); !usage) {
    spdlog::warn("event=host_limits error=\"{}\"", usage.error().message);
  } else {
    spdlog::info("event=host_limits open_files={} file_limit={} mappings={} mapping_limit={}",
                 usage->files, usage->file_limit, usage->mappings, usage->mapping_limit);
  }
  // Counts mappings and files for the workers, whose filter forbids /proc.
  vm::HostLimitWatch host_limit_watch(options.max_mappings);
  std::string because;
  auto backend = vm::openBackend(choice, because, kvm_options);
  if (!backend) {
    spdlog::critical("event=start_failed step=backend error=\"{}\"", backend.error().describe());
    return 1;
  }
  spdlog::info("event=backend name={} isolation=\"{}\" reason=\"{}\"",
               vm::backendKindName(backend.value()->kind()),
               backend.value()->kind() == vm::BackendKind::kKvm ? "hardware virtualisation"
                                                                : "software emulation",
               because);

  if (auto prepared = prepareDataDirectory(options.data_dir, *run_as); !prepared) {
    spdlog::critical("event=start_failed step=data_dir dir={} error=\"{}\"", options.data_dir,
                     prepared.error().message);
    return 1;
  }

  // Before the filter below: it forbids starting processes.
  // It changes to the server's user itself, before it serves.
  // A Wasm SDK named by --wasm-sdk must be there; a missing default only
  // refuses Wasm uploads, so a machine without the tools serves ELF guests.
  const std::string wasm_sdk = options.wasm_sdk.empty() ? wasm::defaultSdkDir() : options.wasm_sdk;
  auto translator = [&]() -> vm::Expected<std::unique_ptr<wasm::TranslatorService>> {
    if (auto usable = wasm::checkToolchain(wasm::toolchainFromSdk(wasm_sdk)); !usable)
      return usable.takeError();
    return wasm::TranslatorService::start("/proc/self/exe", kServeWasmTranslations,
                                          *run_as ? (*run_as)->user : std::string(), wasm_sdk);
  }();
  if (!translator && !options.wasm_sdk.empty()) {
    spdlog::critical("event=start_failed step=wasm_sdk dir={} error=\"{}\"", wasm_sdk,
                     translator.error().message);
    return 1;
  }
  if (!translator) {
    spdlog::warn("event=wasm_translator_unavailable error=\"{}\" what=\"Wasm uploads are refused\"",
                 translator.error().describe());
  }

  std::optional<vm::FilterMode> filter_mode;
  if (vm::FilterMode mode; vm::parseFilterMode(options.syscall_filter, mode)) filter_mode = mode;
  if (filter_mode) {
    // Before the workers start: their own filter stacks on this one, and a
    // thread with a filter of its own cannot be given another one later.
    // Nothing from here on needs what it forbids.
    if (auto restricted = vm::restrictProcess(*filter_mode); !restricted) {
      spdlog::critical("event=start_failed step=syscall_filter error=\"{}\"",
                       restricted.error().describe());
      return 1;
    }
    spdlog::info("event=syscall_filter mode={} guest_threads=allow_list process=deny_list",
                 vm::filterModeName(*filter_mode));
  } else {
    spdlog::warn(
        "event=syscall_filter mode=off what=\"no system-call filter: a guest that escapes its VM "
        "finds "
        "every system call\"");
  }

  int exit_code;
  {
    Server server(options, started, std::move(backend.value()), std::move(tenant_configs.value()),
                  filter_mode, translator ? translator.value().get() : nullptr, *run_as);
    exit_code = server.serve();
  }
  spdlog::info("event=shutdown_done exit_code={}", exit_code);
  return exit_code;
}

}  // namespace sandpool::server
