#include "server/vm_settings.h"

#include <sandpool/abi.h>

#include <fmt/format.h>

#include "vm/layout.h"

namespace sandpool::server {

namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMemoryAlignment = 2 * vm::kMiB;
constexpr uint64_t kMinMemory = 4 * vm::kMiB;
constexpr uint64_t kMinStack = 16 * kKiB;
constexpr uint64_t kMinBuffer = vm::kPageSize;

uint64_t orElse(uint64_t chosen, uint64_t base) { return chosen != 0 ? chosen : base; }

// A size between `least` and `most`, a multiple of `alignment`; the message
// names the field as the wire does.
std::optional<std::string> checkSize(const char* field, uint64_t value, uint64_t least,
                                     uint64_t most, uint64_t alignment) {
  if (value < least || value > most || value % alignment != 0) {
    return fmt::format("{} {} must be a multiple of {} between {} and {}", field, value, alignment,
                       least, most);
  }
  return std::nullopt;
}

}  // namespace

VmSettings VmSettings::over(const VmSettings& base) const {
  return VmSettings{orElse(memory_bytes, base.memory_bytes), orElse(stack_bytes, base.stack_bytes),
                    orElse(input_bytes, base.input_bytes), orElse(output_bytes, base.output_bytes),
                    max_host_calls != 0 ? max_host_calls : base.max_host_calls};
}

VmSettings defaultVmSettings(const ServerOptions& options) {
  return VmSettings{options.guest_memory_mib * vm::kMiB, options.guest_stack_kib * kKiB,
                    options.guest_input_kib * kKiB, options.guest_output_kib * kKiB,
                    options.guest_host_calls};
}

std::optional<std::string> checkVmSettings(const VmSettings& settings,
                                           const ServerOptions& options) {
  const uint64_t max_buffer = options.guest_buffer_max_kib * kKiB;
  if (auto bad = checkSize("memoryBytes", settings.memory_bytes, kMinMemory,
                           options.guest_memory_max_mib * vm::kMiB, kMemoryAlignment))
    return bad;
  if (auto bad =
          checkSize("stackBytes", settings.stack_bytes, kMinStack, max_buffer, vm::kPageSize))
    return bad;
  if (auto bad =
          checkSize("inputBytes", settings.input_bytes, kMinBuffer, max_buffer, vm::kPageSize))
    return bad;
  if (auto bad =
          checkSize("outputBytes", settings.output_bytes, kMinBuffer, max_buffer, vm::kPageSize))
    return bad;
  if (settings.max_host_calls < 1 || settings.max_host_calls > options.guest_host_calls_max) {
    return fmt::format("maxHostCalls {} must be between 1 and {}", settings.max_host_calls,
                       options.guest_host_calls_max);
  }
  // The layout (vm/layout.h) puts the buffers after the image, which starts
  // at SANDPOOL_IMAGE_BASE, and needs a page of heap and a guard page.
  const vm::VmConfig config = vmConfigFor(settings, options);
  const uint64_t fixed = SANDPOOL_IMAGE_BASE + config.input_size + config.output_size +
                         config.host_call_size + config.stack_size + 2 * vm::kPageSize;
  if (fixed > config.memory_size) {
    return fmt::format(
        "inputBytes, outputBytes and stackBytes with the host-call buffer ({}) and the guest image "
        "base ({}) take {} bytes; memoryBytes is {}",
        config.host_call_size, SANDPOOL_IMAGE_BASE, fixed, config.memory_size);
  }
  return std::nullopt;
}

vm::VmConfig vmConfigFor(const VmSettings& settings, const ServerOptions& options) {
  vm::VmConfig config;
  config.memory_size = settings.memory_bytes;
  config.stack_size = settings.stack_bytes;
  config.input_size = settings.input_bytes;
  config.output_size = settings.output_bytes;
  config.max_host_calls = settings.max_host_calls;
  config.max_binary_size = options.max_upload_bytes;
  return config;
}

VmSettings vmSettingsOf(const vm::VmConfig& config) {
  return VmSettings{config.memory_size, config.stack_size, config.input_size, config.output_size,
                    config.max_host_calls};
}

}  // namespace sandpool::server
