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
#include <optional>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <spdlog/spdlog.h>

#include "common/untrusted_text.h"
#include "pool/scheduler.h"
#include "pool/spin_wait.h"
#include "pool/tenant_pool.h"
#include "server/guest_store.h"
#include "server/kj_mailbox.h"
#include "server/rpc_listener.h"
#include "server/sandpool_service.h"
#include "server/service_context.h"
#include "server/tenant_state.h"
#include "server/tenants_file.h"
#include "vm/backend.h"
#include "vm/syscall_filter.h"
#include "vm/unique_fd.h"

namespace sandpool::server {

namespace fs = std::filesystem;

namespace {

class LogErrors final : public kj::TaskSet::ErrorHandler {
 public:
  void taskFailed(kj::Exception&& exception) override {
    spdlog::error("event=task_failed error=\"{}\"", text::escapeUntrusted(exception.getDescription().cStr()));
  }
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
  if (fd.valid() && ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return false;
  ::unlink(path.c_str());
  return true;
}

// The Unix socket path as given, made absolute against the data directory.
std::string unixSocketPath(const ServerOptions& options) {
  fs::path p(options.listen_unix);
  if (p.is_relative()) p = fs::absolute(fs::path(options.data_dir) / p);
  return p.string();
}

// SIGHUP: re-read the tenants file (token rotation, tenants added or
// removed). A file that fails to parse changes nothing.
kj::Promise<void> reloadOnHangup(ServiceContext& ctx, kj::UnixEventPort& port, const ServerOptions& options) {
  return port.onSignal(SIGHUP).then([&ctx, &port, &options](siginfo_t) {
    auto configs = loadTenantsFile(options.tenants_file, options.queue_length);
    if (!configs) {
      spdlog::error("event=tenants_reload_failed error=\"{}\"", configs.error().message);
    } else {
      ctx.applyTenants(std::move(configs.value()));
      spdlog::info("event=tenants_reloaded tenants={}", ctx.tenants.size());
    }
    return reloadOnHangup(ctx, port, options);
  });
}

// Runs the KJ loop until SIGTERM or SIGINT and returns the signal.
//
// While calls are out on the workers the loop busy-polls (for at most
// `spin` without progress) instead of sleeping in epoll: a reply then
// reaches its client without the sleep/wake-up of the RPC thread, which
// costs more than the call itself. A turn that delivered a reply or started
// or finished a call goes straight on to the next one. Only an idle turn
// waits: eagerly while the pools are lightly loaded, politely (yielding the
// CPU) while calls queue, so that it never keeps a worker or a client off
// an oversubscribed core, and not at all while long calls run set aside
// (pool::SpinWait). Under load every call passes
// through this thread: yielding its core after a turn that had work only
// delays the next (docs/performance.md). With nothing in flight it sleeps.
int serveUntilSignal(ServiceContext& ctx, const pool::Scheduler& scheduler, KjMailbox& mailbox,
                     kj::AsyncIoContext& io, std::chrono::microseconds spin) {
  int received = 0;
  auto signal = io.unixEventPort.onSignal(SIGTERM)
                    .exclusiveJoin(io.unixEventPort.onSignal(SIGINT))
                    .then([&received](siginfo_t info) { received = info.si_signo; })
                    .fork();
  while (received == 0) {
    if (spin.count() > 0 && ctx.inFlight() > 0) {
      mailbox.beginSpin();
      pool::SpinWait wait(spin, scheduler.spinMode());
      bool idle = false;
      while (received == 0 && ctx.inFlight() > 0 && (!idle || wait.turn())) {
        const uint64_t before = ctx.activityCount();
        const bool delivered = mailbox.drainIfAny();
        io.waitScope.poll();
        idle = !delivered && ctx.activityCount() == before;
        if (!idle) wait.restart(scheduler.spinMode());
      }
      mailbox.endSpin();
      io.waitScope.poll();
      if (received != 0) break;
    }
    signal.addBranch().exclusiveJoin(ctx.nextActivity()).wait(io.waitScope);
  }
  return received;
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
  auto tenant_configs = loadTenantsFile(options.tenants_file, options.queue_length);
  if (!tenant_configs) {
    spdlog::critical("event=start_failed step=tenants error=\"{}\"", tenant_configs.error().message);
    return 1;
  }
  vm::BackendChoice choice;
  if (!vm::parseBackendChoice(options.backend, choice)) {
    spdlog::critical("event=start_failed step=backend error=\"unknown backend '{}'\"", options.backend);
    return 1;
  }
  vm::KvmOptions kvm_options;
  if (!vm::parseKvmSpeedCheck(options.kvm_speed_check, kvm_options)) {
    spdlog::critical("event=start_failed step=backend error=\"--kvm-speed-check takes require or waive, not '{}'\"",
                     options.kvm_speed_check);
    return 1;
  }
  std::string because;
  auto backend = vm::openBackend(choice, because, kvm_options);
  if (!backend) {
    spdlog::critical("event=start_failed step=backend error=\"{}\"", backend.error().describe());
    return 1;
  }
  spdlog::info("event=backend name={} isolation=\"{}\" reason=\"{}\"", vm::backendKindName(backend.value()->kind()),
               backend.value()->kind() == vm::BackendKind::kKvm ? "hardware virtualisation" : "software emulation",
               because);

  std::error_code ec;
  fs::create_directories(fs::path(options.data_dir) / "guests", ec);
  if (ec) {
    spdlog::critical("event=start_failed step=data_dir dir={} error=\"{}\"", options.data_dir, ec.message());
    return 1;
  }
  GuestStore store(fs::path(options.data_dir) / "guests");

  vm::VmConfig vm_config;
  vm_config.memory_size = options.guest_memory_mib * vm::kMiB;
  vm_config.max_binary_size = options.max_upload_bytes;

  std::optional<vm::FilterMode> filter_mode;
  if (vm::FilterMode mode; vm::parseFilterMode(options.syscall_filter, mode)) filter_mode = mode;
  if (filter_mode) {
    // Before the workers start: their own filter stacks on this one, and a
    // thread with a filter of its own cannot be given another one later.
    // Nothing from here on needs what it forbids.
    if (auto restricted = vm::restrictProcess(*filter_mode); !restricted) {
      spdlog::critical("event=start_failed step=syscall_filter error=\"{}\"", restricted.error().describe());
      return 1;
    }
    spdlog::info("event=syscall_filter mode={} guest_threads=allow_list process=deny_list",
                 vm::filterModeName(*filter_mode));
  } else {
    spdlog::warn("event=syscall_filter mode=off what=\"no system-call filter: a guest that escapes its VM finds "
                 "every system call\"");
  }
  pool::SchedulerOptions scheduler_options{options.workers, options.worker_spin, options.long_call,
                                           options.max_long_calls, options.max_long_calls_per_tenant};
  if (filter_mode) {
    scheduler_options.thread_setup = [kind = backend.value()->kind(), mode = *filter_mode] {
      if (auto restricted = vm::restrictGuestThread(kind, mode); !restricted) {
        // A worker without its filter would run guests unguarded.
        spdlog::critical("event=syscall_filter_failed thread=worker error=\"{}\"", restricted.error().describe());
        std::abort();
      }
    };
  }
  pool::Scheduler scheduler(std::move(scheduler_options));
  boost::asio::io_context io(1);
  auto io_work = boost::asio::make_work_guard(io);
  // Uploads boot their guest here, one at a time per tenant (BootGate): a
  // thread per tenant at start and one more, so that no tenant's uploads,
  // whose initialisation may spin until the boot timeout, hold every thread.
  boost::asio::thread_pool blocking(std::clamp<size_t>(tenant_configs.value().size() + 1, 2, 64));

  auto make_pool = [&](const TenantConfig& config) {
    return std::make_unique<pool::TenantPool>(scheduler, *backend.value(), io, config.name, config.quota,
                                              options.idle_time);
  };
  std::vector<std::unique_ptr<TenantState>> tenants;
  for (auto& config : tenant_configs.value()) {
    auto t = std::make_unique<TenantState>();
    t->pool = make_pool(config);
    t->config = std::move(config);
    tenants.push_back(std::move(t));
  }

  scheduler.start();
  std::thread asio_thread([&io] { io.run(); });

  auto kj_io = kj::setupAsyncIo();
  KjMailbox mailbox(kj_io.unixEventPort);
  int exit_code = 0;
  {
    ServiceContext ctx(options, vm_config, *backend.value(), store, mailbox, blocking, tenants, make_pool);
    for (auto& tenant : tenants) ctx.loadStoredGuests(*tenant);

    LogErrors log_errors;
    kj::TaskSet loops(log_errors);
    loops.add(mailbox.run());
    loops.add(reloadOnHangup(ctx, kj_io.unixEventPort, options));

    const ConnectionLimits limits{
        .max_connections = options.max_connections,
        .max_connections_per_peer = options.max_connections_per_peer,
        .login_timeout = options.login_timeout.count() * kj::MILLISECONDS,
        .idle_timeout = options.connection_idle_timeout.count() * kj::MILLISECONDS,
        .flow_limit_words = options.rpc_flow_limit_bytes / sizeof(capnp::word),
        .messages = {.login_message_words = options.rpc_login_message_limit_bytes / sizeof(capnp::word),
                     .message_words = options.rpcMessageLimit() / sizeof(capnp::word),
                     .max_caps_per_message = options.rpc_max_caps_per_message,
                     .max_imports = options.rpc_max_imports}};
    std::optional<RpcListener> listener;
    listener.emplace(ctx, kj_io.provider->getNetwork(), kj_io.provider->getTimer(), limits);

    std::string ready = "sandpoold ready";
    std::string unix_path;
    try {
      if (!options.listen_tcp.empty()) {
        ready += " tcp=" + listener->listen(options.listen_tcp).wait(kj_io.waitScope);
      }
      if (!options.listen_unix.empty()) {
        std::string path = unixSocketPath(options);
        if (!clearStaleSocket(path)) {
          throw KJ_EXCEPTION(FAILED, "another process is serving on the Unix socket", path.c_str());
        }
        listener->listen("unix:" + path).wait(kj_io.waitScope);
        unix_path = path;  // ours to remove at exit from here on
        ready += " unix=" + unix_path;
      }
    } catch (const kj::Exception& e) {
      spdlog::critical("event=start_failed step=listen error=\"{}\"", e.getDescription().cStr());
      exit_code = 1;
    }

    if (exit_code == 0) {
      // Only once the listeners are up: a second sandpoold started on this
      // data directory by mistake stops at its Unix socket (by default in
      // the data directory) before it could delete the temporary file of an
      // upload the first one is writing. Files written since `started` are
      // this process's own.
      for (const auto& stale : store.removeStaleTemporaries(started)) {
        if (stale.error) {
          spdlog::error("event=stale_temporary_kept path=\"{}\" bytes={} error=\"{}\"",
                        text::escapeUntrusted(stale.path.string()), stale.bytes, *stale.error);
        } else {
          spdlog::info("event=stale_temporary_removed path=\"{}\" bytes={}", text::escapeUntrusted(stale.path.string()),
                       stale.bytes);
        }
      }
      spdlog::info("event=ready workers={} tenants={} {}", options.workers, tenants.size(), ready);
      std::printf("%s\n", ready.c_str());
      std::fflush(stdout);

      int signal = serveUntilSignal(ctx, scheduler, mailbox, kj_io, options.rpc_spin);
      spdlog::info("event=shutdown_begin signal={} in_flight={}", signal, ctx.inFlight());

      listener->stopAccepting();
      bool drained = ctx.shutdown()
                         .then([] { return true; })
                         .exclusiveJoin(kj_io.provider->getTimer()
                                            .afterDelay(options.shutdown_grace.count() * kj::MILLISECONDS)
                                            .then([] { return false; }))
                         .wait(kj_io.waitScope);
      spdlog::info("event=shutdown_drained clean={} in_flight={}", drained, ctx.inFlight());
    }

    // Everything that can post to the mailbox stops first; what it posted
    // is delivered while the KJ loop still exists, and the replies flushed.
    scheduler.stop();
    blocking.join();
    for (auto& tenant : tenants) tenant->pool->stop();
    io_work.reset();
    asio_thread.join();
    mailbox.drainNow();
    kj_io.waitScope.poll();
    listener->closeConnections();
    listener.reset();
    kj_io.waitScope.poll();
    if (!unix_path.empty()) ::unlink(unix_path.c_str());
  }
  tenants.clear();
  spdlog::info("event=shutdown_done exit_code={}", exit_code);
  return exit_code;
}

}  // namespace sandpool::server
