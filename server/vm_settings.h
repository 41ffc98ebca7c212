// One guest's VM settings as its tenant chooses them at upload or with
// configure: guest memory, stack, input and output buffers, and host calls
// per call. sandpoold's flags give the defaults and the maxima
// (docs/server.md, "VM settings"); the rest of a VM's configuration (the
// host-call buffer, the boot timeout, the output kept per call) is the
// server's alone.
//
// A field of 0 is "not chosen": a request leaves it unchanged, and what is
// stored with a guest falls back to the server's default when it boots.
// Threads: plain values, any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "server/options.h"
#include "vm/config.h"

namespace sandpool::server {

struct VmSettings {
  uint64_t memory_bytes = 0;
  uint64_t stack_bytes = 0;
  uint64_t input_bytes = 0;
  uint64_t output_bytes = 0;
  uint32_t max_host_calls = 0;

  // This one's chosen fields, `base`'s for the others.
  VmSettings over(const VmSettings& base) const;
  bool empty() const { return *this == VmSettings{}; }
  bool operator==(const VmSettings&) const = default;
};

// The flags' defaults: every field set.
VmSettings defaultVmSettings(const ServerOptions& options);

// Why `settings` (every field set) cannot run on this server: below the
// least that boots, past the flags' maxima, not aligned, or buffers and
// stack that leave no room in guest memory. Nothing if they can.
std::optional<std::string> checkVmSettings(const VmSettings& settings,
                                           const ServerOptions& options);

// The configuration a guest's VMs boot with (`settings` with every field set).
vm::VmConfig vmConfigFor(const VmSettings& settings, const ServerOptions& options);
// What a VM runs with, as VM settings (every field set).
VmSettings vmSettingsOf(const vm::VmConfig& config);

}  // namespace sandpool::server
