#include "server/options.h"

#include <fstream>
#include <iostream>
#include <thread>

#include <boost/program_options.hpp>
#include <fmt/format.h>

#include "server/vm_settings.h"
#include "vm/watchdog.h"

namespace po = boost::program_options;

namespace sandpool::server {

namespace {

// Calls on workers and set aside, each holding a watchdog slot; the rest of
// the slots are for the boots of uploads (at most 64 threads).
constexpr uint64_t kMaxRunningCalls = vm::Watchdog::kSlots - 64;

}  // namespace

ParsedOptions parseOptions(int argc, char** argv) {
  ServerOptions o;
  uint64_t idle_ms = 0, timeout_ms = 0, grace_ms = 0, spin_us = 0, rpc_spin_us = 0,
           long_call_us = 0;
  uint64_t login_timeout_ms = 0, connection_idle_ms = 0;
  uint64_t max_upload_kib = 0, rpc_limit_kib = 0, flow_limit_kib = 0, login_limit_kib = 0;
  std::string config_file;

  po::options_description general("General");
  general.add_options()("help,h", "print this help and exit")(
      "config", po::value(&config_file)->value_name("FILE"),
      "read further settings from FILE (key = value lines, keys as the flags without --); "
      "flags on the command line win");

  po::options_description server("Server");
  server.add_options()(
      "listen-tcp", po::value(&o.listen_tcp)->default_value(o.listen_tcp)->value_name("HOST:PORT"),
      "TCP address to serve RPC on; port 0 picks a free port; empty disables TCP")(
      "listen-unix", po::value(&o.listen_unix)->default_value(o.listen_unix)->value_name("PATH"),
      "Unix socket to serve RPC on, relative to --data-dir unless absolute; empty disables it")(
      "listen-metrics", po::value(&o.listen_metrics)->value_name("HOST:PORT"),
      "TCP address to serve HTTP /metrics (Prometheus), /healthz and /readyz on, without "
      "authentication: keep it on loopback or a private network; port 0 picks a free port; "
      "off by default")(
      "backend", po::value(&o.backend)->default_value(o.backend)->value_name("auto|kvm|emulated"),
      "VM backend; auto uses KVM where /dev/kvm opens and passes its self-test, the emulator "
      "otherwise")(
      "kvm-speed-check",
      po::value(&o.kvm_speed_check)->default_value(o.kvm_speed_check)->value_name("require|waive"),
      "waive: accept a KVM whose guest code runs far below hardware speed (KVM under software "
      "emulation; "
      "the KVM self-test, docs/kvm.md) instead of refusing it")(
      "syscall-filter",
      po::value(&o.syscall_filter)->default_value(o.syscall_filter)->value_name("kill|log|off"),
      "system-call filters (seccomp): an allow-list on the threads that run guests, a deny-list "
      "(no new "
      "processes or programs, no tracing, modules or mounts) on the whole process; a call outside "
      "them kills "
      "the process (kill), or is only logged by the kernel (log, for tuning); docs/security.md")(
      "user", po::value(&o.user)->value_name("NAME"),
      "started as root: drop to this user once the sockets, /dev/kvm and the data directory are "
      "open (the data "
      "directory is handed to it); docs/security.md, \"Privileges\"")(
      "allow-root", po::bool_switch(&o.allow_root),
      "run as root without --user (refused otherwise)")(
      "allow-core-dumps", po::bool_switch(&o.allow_core_dumps),
      "let the process dump core (off by default: a core would hold tenants' data)")(
      "workers", po::value(&o.workers)->default_value(0)->value_name("N"),
      "vCPU worker threads; 0 means one per CPU core")(
      "max-mappings", po::value(&o.max_mappings)->default_value(0)->value_name("N"),
      "refuse new VMs (overloaded) while the process's memory mappings are within a sixteenth "
      "of N; 0 means the kernel's vm.max_map_count, and a larger N counts as it (docs/server.md, "
      "\"Sizing the machine\")")(
      "long-call-us", po::value(&long_call_us)->default_value(5000)->value_name("US"),
      "a call still running after one to two of these steps aside: its thread drops to the idle "
      "scheduling "
      "class and a new worker takes its place, so that long calls of one tenant never hold the "
      "workers from "
      "another's calls (docs/server.md, \"Long calls\"); 0 disables")(
      "max-long-calls",
      po::value(&o.max_long_calls)->default_value(o.max_long_calls)->value_name("N"),
      "most calls stepped aside at once, each on a thread of its own; past it long calls keep "
      "their worker")("max-long-calls-per-tenant",
                      po::value(&o.max_long_calls_per_tenant)->default_value(0)->value_name("N"),
                      "a tenant with this many calls stepped aside starts no other call until one "
                      "ends; 0 means twice "
                      "--workers")(
      "worker-spin-us", po::value(&spin_us)->default_value(1000)->value_name("US"),
      "how long an idle worker busy-waits for the next call before sleeping (eagerly while the "
      "server is "
      "lightly loaded; under load yielding the CPU on every turn, for at most 100 us); 0 disables")(
      "rpc-spin-us", po::value(&rpc_spin_us)->default_value(300)->value_name("US"),
      "how long the RPC thread busy-polls for a reply from a worker before sleeping (eagerly or "
      "yielding, as "
      "the workers); 0 disables")("tenants", po::value(&o.tenants_file)->value_name("FILE"),
                                  "tenants file: tokens and quotas (required; see docs/server.md)")(
      "data-dir", po::value(&o.data_dir)->default_value(o.data_dir)->value_name("DIR"),
      "where uploaded guests are stored and reloaded from at start-up")(
      "wasm-sdk", po::value(&o.wasm_sdk)->value_name("DIR"),
      "the Wasm SDK folder that Wasm uploads are compiled against (default: "
      "../share/sandpool/wasm-sdk next to sandpoold, else the build tree's; see docs/wasm.md)")(
      "shutdown-grace-ms", po::value(&grace_ms)->default_value(10000)->value_name("MS"),
      "on SIGTERM/SIGINT, how long in-flight calls may take to finish");

  po::options_description pools("Pools and limits");
  pools.add_options()("min-warm",
                      po::value(&o.min_warm)->default_value(o.min_warm)->value_name("N"),
                      "VMs of each guest kept booted while it is in use (guests may change it)")(
      "max-vms", po::value(&o.max_vms)->default_value(o.max_vms)->value_name("N"),
      "most VMs of each guest at once (guests may change it within their tenant's quota)")(
      "idle-time-ms", po::value(&idle_ms)->default_value(60000)->value_name("MS"),
      "a guest with no call for this long drops its idle VMs (scale to zero)")(
      "call-timeout-ms", po::value(&timeout_ms)->default_value(5000)->value_name("MS"),
      "longest a call may take, queueing and host calls included; clients may ask for less")(
      "guest-memory-mib",
      po::value(&o.guest_memory_mib)->default_value(o.guest_memory_mib)->value_name("MIB"),
      "guest memory of each VM, for guests that choose none (a multiple of 2)")(
      "guest-memory-max-mib",
      po::value(&o.guest_memory_max_mib)->default_value(o.guest_memory_max_mib)->value_name("MIB"),
      "most guest memory a guest may choose for its VMs")(
      "guest-stack-kib",
      po::value(&o.guest_stack_kib)->default_value(o.guest_stack_kib)->value_name("KIB"),
      "stack of each VM, for guests that choose none (a multiple of 4)")(
      "guest-input-kib",
      po::value(&o.guest_input_kib)->default_value(o.guest_input_kib)->value_name("KIB"),
      "input buffer (a call's arguments) of each VM, for guests that choose none (a multiple of "
      "4)")("guest-output-kib",
            po::value(&o.guest_output_kib)->default_value(o.guest_output_kib)->value_name("KIB"),
            "output buffer (a call's result) of each VM, for guests that choose none (a multiple "
            "of 4)")(
      "guest-buffer-max-kib",
      po::value(&o.guest_buffer_max_kib)->default_value(o.guest_buffer_max_kib)->value_name("KIB"),
      "most stack, input buffer and output buffer (each) a guest may choose")(
      "guest-host-calls",
      po::value(&o.guest_host_calls)->default_value(o.guest_host_calls)->value_name("N"),
      "host calls one call may make, for guests that choose none")(
      "guest-host-calls-max",
      po::value(&o.guest_host_calls_max)->default_value(o.guest_host_calls_max)->value_name("N"),
      "most host calls per call a guest may choose")(
      "queue-length", po::value(&o.queue_length)->default_value(o.queue_length)->value_name("N"),
      "calls a tenant may have waiting before new ones are refused as overloaded "
      "(the tenants file may set it per tenant)")(
      "max-upload-kib", po::value(&max_upload_kib)->default_value(32 * 1024)->value_name("KIB"),
      "largest guest ELF accepted by upload")(
      "rpc-message-limit-kib", po::value(&rpc_limit_kib)->default_value(0)->value_name("KIB"),
      "largest RPC message read from a client (its traversal limit too); 0 means the "
      "largest upload plus 1 MiB; a client sending more is disconnected")(
      "rpc-flow-limit-kib", po::value(&flow_limit_kib)->default_value(64 * 1024)->value_name("KIB"),
      "per connection, call data in flight before the server stops reading more")(
      "rpc-login-message-limit-kib",
      po::value(&login_limit_kib)->default_value(64)->value_name("KIB"),
      "largest RPC message read from a connection that has not logged in yet (its traversal limit "
      "too); "
      "a client sending more is disconnected")("rpc-max-caps-per-message",
                                               po::value(&o.rpc_max_caps_per_message)
                                                   ->default_value(o.rpc_max_caps_per_message)
                                                   ->value_name("N"),
                                               "capabilities one RPC message from a client may "
                                               "carry; a client sending more is disconnected")(
      "rpc-max-imports",
      po::value(&o.rpc_max_imports)->default_value(o.rpc_max_imports)->value_name("N"),
      "per connection, capabilities a client may have lent the server at once (e.g. the "
      "HostFunctions of "
      "its calls in flight); a client lending more is disconnected");

  po::options_description connections("Connections");
  connections.add_options()(
      "max-connections",
      po::value(&o.max_connections)->default_value(o.max_connections)->value_name("N"),
      "connections served at once (TCP and Unix together); at the limit a new connection takes the "
      "place "
      "of the oldest one that has not logged in, and is closed on accept if every one has")(
      "max-connections-per-peer",
      po::value(&o.max_connections_per_peer)
          ->default_value(o.max_connections_per_peer)
          ->value_name("N"),
      "connections one peer may hold at once (per uid on the Unix socket, per IP address on TCP); "
      "more are closed on accept")(
      "login-timeout-ms", po::value(&login_timeout_ms)->default_value(10000)->value_name("MS"),
      "a connection that has not logged in this long after it was accepted is closed")(
      "connection-idle-timeout-ms",
      po::value(&connection_idle_ms)->default_value(300000)->value_name("MS"),
      "a connection that has no call in flight and moved no message either way for this long is "
      "closed; "
      "0 never closes one for being idle");

  po::options_description logging("Logging");
  logging.add_options()("log-level",
                        po::value(&o.log_level)->default_value(o.log_level)->value_name("LEVEL"),
                        "trace, debug, info, warn, error or off")(
      "log-format", po::value(&o.log_format)->default_value(o.log_format)->value_name("text|json"),
      "one line per event, as key=value text or as JSON");

  po::options_description all(
      "sandpoold: runs tenants' functions in warm micro-VMs over Cap'n Proto RPC\n\n"
      "Usage: sandpoold --tenants FILE [options]");
  all.add(general).add(server).add(pools).add(connections).add(logging);

  ParsedOptions result;
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, all), vm);
    if (vm.count("help")) {
      std::cout << all << "\n";
      return result;
    }
    if (vm.count("config")) {
      std::ifstream in(vm["config"].as<std::string>());
      if (!in) {
        std::cerr << "sandpoold: cannot open config file '" << vm["config"].as<std::string>()
                  << "'\n";
        result.exit_code = 2;
        return result;
      }
      po::store(po::parse_config_file(in, all), vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "sandpoold: " << e.what() << " (see --help)\n";
    result.exit_code = 2;
    return result;
  }
  auto fail = [&](const std::string& message) {
    std::cerr << "sandpoold: " << message << " (see --help)\n";
    result.exit_code = 2;
    return result;
  };
  if (o.tenants_file.empty()) return fail("--tenants is required");
  if (o.listen_tcp.empty() && o.listen_unix.empty())
    return fail("no listener: set --listen-tcp or --listen-unix");
  if (o.max_vms == 0) return fail("--max-vms must be at least 1");
  if (o.min_warm > o.max_vms)
    return fail(fmt::format("--min-warm {} exceeds --max-vms {}", o.min_warm, o.max_vms));
  if (o.queue_length == 0) return fail("--queue-length must be at least 1");
  if (o.max_connections == 0) return fail("--max-connections must be at least 1");
  if (o.max_connections_per_peer == 0) return fail("--max-connections-per-peer must be at least 1");
  if (o.rpc_max_caps_per_message == 0) return fail("--rpc-max-caps-per-message must be at least 1");
  if (o.rpc_max_imports == 0) return fail("--rpc-max-imports must be at least 1");
  if (login_timeout_ms == 0) return fail("--login-timeout-ms must be at least 1");
  if (login_limit_kib == 0) return fail("--rpc-login-message-limit-kib must be at least 1");
  if (timeout_ms == 0) return fail("--call-timeout-ms must be at least 1");
  if (o.guest_memory_mib < 2 || o.guest_memory_mib % 2 != 0)
    return fail("--guest-memory-mib must be a multiple of 2");
  if (o.guest_memory_max_mib < o.guest_memory_mib || o.guest_memory_max_mib > 64 * 1024)
    return fail("--guest-memory-max-mib must be at least --guest-memory-mib and at most 65536");
  if (o.guest_buffer_max_kib > 1024 * 1024)
    return fail("--guest-buffer-max-kib must be at most 1048576");
  if (o.guest_host_calls_max < o.guest_host_calls)
    return fail("--guest-host-calls-max must be at least --guest-host-calls");
  if (auto bad = checkVmSettings(defaultVmSettings(o), o))
    return fail(fmt::format("the --guest-* defaults do not make a VM: {}", *bad));
  if (o.syscall_filter != "kill" && o.syscall_filter != "log" && o.syscall_filter != "off") {
    return fail(
        fmt::format("--syscall-filter must be kill, log or off, not '{}'", o.syscall_filter));
  }
  if (o.log_format != "text" && o.log_format != "json")
    return fail(fmt::format("--log-format must be text or json, not '{}'", o.log_format));
  o.idle_time = std::chrono::milliseconds(idle_ms);
  o.call_timeout = std::chrono::milliseconds(timeout_ms);
  o.shutdown_grace = std::chrono::milliseconds(grace_ms);
  o.worker_spin = std::chrono::microseconds(spin_us);
  o.long_call = std::chrono::microseconds(long_call_us);
  o.rpc_spin = std::chrono::microseconds(rpc_spin_us);
  o.max_upload_bytes = max_upload_kib << 10;
  o.rpc_message_limit_bytes = rpc_limit_kib << 10;
  o.rpc_flow_limit_bytes = flow_limit_kib << 10;
  o.rpc_login_message_limit_bytes = login_limit_kib << 10;
  o.login_timeout = std::chrono::milliseconds(login_timeout_ms);
  o.connection_idle_timeout = std::chrono::milliseconds(connection_idle_ms);
  if (o.rpcMessageLimit() <= o.max_upload_bytes) {
    return fail(
        "--rpc-message-limit-kib must exceed --max-upload-kib, or an upload of the largest "
        "accepted size could not arrive");
  }
  if (o.rpc_login_message_limit_bytes > o.rpcMessageLimit()) {
    return fail(
        "--rpc-login-message-limit-kib exceeds the RPC message limit (--rpc-message-limit-kib)");
  }
  if (o.workers == 0) o.workers = std::max(1u, std::thread::hardware_concurrency());
  if (o.max_long_calls_per_tenant == 0) o.max_long_calls_per_tenant = 2 * o.workers;
  // Every running call holds one of the watchdog's slots; uploads' boots
  // hold a few more.
  if (o.workers + uint64_t{o.max_long_calls} > kMaxRunningCalls) {
    return fail(fmt::format("--workers plus --max-long-calls exceeds {} calls running at once",
                            kMaxRunningCalls));
  }
  result.options = o;
  return result;
}

}  // namespace sandpool::server
