// A booted, initialised guest frozen for reuse: guest memory as a sealed
// memfd, the vCPU state at READY, the layout and the guest's export table.
// Immutable and shared (shared_ptr<const Snapshot>) by every VM of the guest.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "vm/backend.h"
#include "vm/config.h"
#include "vm/guest_image.h"
#include "vm/layout.h"
#include "vm/mapping.h"
#include "vm/unique_fd.h"
#include "vm/value.h"

namespace sandpool::vm {

class Snapshot {
 public:
  // Builds the memory image of `image`, boots it on `backend`, runs the
  // guest's initialisation until it signals READY and freezes the result.
  // Any thread; takes up to config.boot_timeout.
  static Expected<std::shared_ptr<const Snapshot>> boot(Backend& backend, const GuestImage& image,
                                                        const VmConfig& config);

  BackendKind backendKind() const { return backend_kind_; }
  const VmConfig& config() const { return config_; }
  const MemoryLayout& layout() const { return layout_; }
  uint64_t entry() const { return entry_; }
  const std::vector<FunctionSignature>& exports() const { return exports_; }
  std::optional<uint32_t> findExport(std::string_view name) const;

  int memfd() const { return memfd_.get(); }
  // Read-only view of the frozen memory, used to restore dirtied pages.
  std::span<const uint8_t> contents() const { return contents_.bytes(); }
  const CpuState& cpu() const { return *cpu_; }
  // Pages holding data (not holes) in the memfd: what the snapshot costs once.
  uint64_t residentPages() const { return resident_pages_; }

 private:
  Snapshot() = default;

  BackendKind backend_kind_ = BackendKind::kEmulated;
  VmConfig config_;
  MemoryLayout layout_;
  uint64_t entry_ = 0;
  std::vector<FunctionSignature> exports_;
  UniqueFd memfd_;
  Mapping contents_;
  std::unique_ptr<CpuState> cpu_;
  uint64_t resident_pages_ = 0;
};

}  // namespace sandpool::vm
