// sandpoold's settings: command-line flags, optionally read from a config
// file with the same keys (`key = value` lines). --help lists every flag with
// its default.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include <capnp/message.h>

namespace sandpool::server {

struct ServerOptions {
  std::string listen_tcp = "127.0.0.1:7300";   // empty: no TCP listener
  std::string listen_unix = "sandpoold.sock";  // relative to data_dir; empty: none
  std::string listen_metrics;                  // HTTP metrics and health; empty: none
  std::string backend = "auto";
  std::string kvm_speed_check = "require";  // or "waive": accept KVM under emulation
  std::string syscall_filter = "kill";      // or "log", "off"
  std::string user;                         // drop to this user after start-up; empty: stay
  bool allow_root = false;
  bool allow_core_dumps = false;
  unsigned workers = 0;  // 0: one per CPU core
  uint64_t max_mappings = 0;  // 0: vm.max_map_count; else the lower of the two
  std::string tenants_file;
  std::string data_dir = "sandpool-data";
  std::string wasm_sdk;  // the Wasm SDK folder; empty: wasm::defaultSdkDir()
  uint32_t min_warm = 1;
  uint32_t max_vms = 8;
  std::chrono::milliseconds idle_time{60000};
  std::chrono::milliseconds call_timeout{5000};
  // VM settings: the defaults of a guest that chooses none, and the most a
  // guest may choose (server/vm_settings.h).
  uint64_t guest_memory_mib = 64;
  uint64_t guest_memory_max_mib = 1024;
  uint64_t guest_stack_kib = 1024;
  uint64_t guest_input_kib = 1024;
  uint64_t guest_output_kib = 1024;
  uint64_t guest_buffer_max_kib = 64 * 1024;  // stack, input and output each
  uint32_t guest_host_calls = 100000;         // per call
  uint32_t guest_host_calls_max = 1000000;
  uint32_t queue_length = 256;
  uint64_t max_upload_bytes = 32ull << 20;
  uint64_t rpc_message_limit_bytes = 0;  // 0: max upload + 1 MiB
  uint64_t rpc_flow_limit_bytes = 64ull << 20;
  uint64_t rpc_login_message_limit_bytes = 64ull << 10;
  uint32_t rpc_max_caps_per_message = 64;
  uint32_t rpc_max_imports = 256;
  uint32_t max_connections = 1024;
  uint32_t max_connections_per_peer = 128;
  std::chrono::milliseconds login_timeout{10000};
  std::chrono::milliseconds connection_idle_timeout{300000};  // 0: never
  std::chrono::milliseconds shutdown_grace{10000};
  std::chrono::microseconds worker_spin{1000};
  std::chrono::microseconds long_call{5000};  // 0: calls never step aside
  uint32_t max_long_calls = 256;
  uint32_t max_long_calls_per_tenant = 0;  // 0: twice the workers
  std::chrono::microseconds rpc_spin{300};
  std::string log_level = "info";
  std::string log_format = "text";

  uint64_t rpcMessageLimit() const {
    return rpc_message_limit_bytes != 0 ? rpc_message_limit_bytes : max_upload_bytes + (1ull << 20);
  }
  // How every message a client sends is read: no larger (and no more
  // traversal) than rpcMessageLimit(), capnp's default nesting limit.
  capnp::ReaderOptions rpcReaderOptions() const {
    capnp::ReaderOptions options;
    options.traversalLimitInWords = rpcMessageLimit() / sizeof(capnp::word);
    return options;
  }
};

struct ParsedOptions {
  std::optional<ServerOptions> options;  // empty when --help was printed or parsing failed
  int exit_code = 0;                     // for main() when options is empty
};

// Prints --help to stdout or errors to stderr itself.
ParsedOptions parseOptions(int argc, char** argv);

}  // namespace sandpool::server
