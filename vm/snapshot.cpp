#include "vm/snapshot.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "vm/entropy.h"
#include "vm/guest_protocol.h"
#include "vm/guest_session.h"
#include "vm/guest_view.h"

namespace sandpool::vm {

namespace {

Error syscallError(const std::string& step) {
  return makeError(ErrorKind::kInternal, fmt::format("{}: {}", step, std::strerror(errno)));
}

// Writes the ELF segments and the boot info into the fresh image.
Expected<void> writeImage(std::span<uint8_t> image, const GuestImage& guest,
                          const MemoryLayout& layout) {
  for (const ImageSegment& s : guest.segments()) {
    // A segment of zeroes only (.bss) has no file bytes, and no pointer to them.
    if (s.data.empty()) continue;
    std::memcpy(image.data() + s.vaddr + s.data_offset, s.data.data(), s.data.size());
  }
  std::array<uint8_t, kEntropyBytes> entropy;
  if (auto filled = fillEntropy(entropy); !filled) return filled;
  return writeBootInfo(image.subspan(layout.boot_info_addr), layout, entropy);
}

}  // namespace

std::optional<uint32_t> Snapshot::findExport(std::string_view name) const {
  for (uint32_t i = 0; i < exports_.size(); i++) {
    if (exports_[i].name == name) return i;
  }
  return std::nullopt;
}

Expected<std::shared_ptr<const Snapshot>> Snapshot::boot(Backend& backend, const GuestImage& image,
                                                         const VmConfig& config) {
  auto layout = computeLayout(image, config);
  if (!layout) return layout.takeError();

  UniqueFd memfd(::memfd_create("sandpool-snapshot", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!memfd.valid()) return syscallError("memfd_create");
  if (::ftruncate(memfd.get(), static_cast<off_t>(config.memory_size)) != 0) {
    return syscallError(fmt::format("ftruncate of the snapshot memfd to {}", config.memory_size));
  }

  std::shared_ptr<Snapshot> snapshot(new Snapshot());
  snapshot->backend_kind_ = backend.kind();
  snapshot->config_ = config;
  snapshot->layout_ = std::move(layout.value());
  snapshot->entry_ = image.entry();
  {
    // The boot VM writes straight into the memfd (MAP_SHARED): what it leaves
    // there at READY is the snapshot, with no copy.
    auto memory = GuestMemory::mapShared(memfd.get(), config.memory_size);
    if (!memory) return memory.takeError();
    if (auto written = writeImage(std::span<uint8_t>(memory->hostBase(), config.memory_size), image,
                                  snapshot->layout_);
        !written) {
      return written.takeError();
    }
    if (auto prepared = backend.prepareImage(
            std::span<uint8_t>(memory->hostBase(), config.memory_size), snapshot->layout_);
        !prepared) {
      return prepared.takeError();
    }
    auto vcpu = backend.createMicroVm(*memory, snapshot->layout_, image.entry());
    if (!vcpu) return vcpu.takeError();

    GuestSession session(GuestSession::Phase::kBoot, *memory, snapshot->layout_, config, **vcpu,
                         nullptr);
    RunExit exit;
    {
      auto guard =
          backend.watchdog().watch(**vcpu, std::chrono::steady_clock::now() + config.boot_timeout);
      if (!guard) return guard.takeError();
      exit = (*vcpu)->run(session);
    }
    if (auto failed = session.failure(exit, config.boot_timeout)) {
      Error error = std::move(*failed);
      error.message = fmt::format("guest initialisation failed: {}", error.message);
      if (!session.output().empty())
        error.message += fmt::format(" (output: {})", session.output());
      if (error.kind != ErrorKind::kInternal) error.kind = ErrorKind::kInvalidGuest;
      return error;
    }
    auto table =
        GuestView(*memory, snapshot->layout_)
            .read(snapshot->layout_.output_addr,
                  std::min<uint64_t>(session.exportTableSize(), snapshot->layout_.output_size),
                  "export table");
    if (!table) return table.takeError();
    auto exports = parseExportTable(*table);
    if (!exports) return exports.takeError();
    snapshot->exports_ = std::move(exports.value());
    snapshot->cpu_ = session.takeReadyState();
  }

  // Sealed: no one, this process included, can change the snapshot now.
  if (::fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) !=
      0) {
    return syscallError("sealing the snapshot memfd");
  }
  auto contents = Mapping::map(config.memory_size, PROT_READ, MAP_SHARED | MAP_NORESERVE,
                               memfd.get(), "snapshot contents");
  if (!contents) return contents.takeError();
  struct stat st;
  if (::fstat(memfd.get(), &st) != 0) return syscallError("fstat of the snapshot memfd");
  snapshot->resident_pages_ = static_cast<uint64_t>(st.st_blocks) * 512 / kPageSize;
  snapshot->contents_ = std::move(contents.value());
  snapshot->memfd_ = std::move(memfd);
  return std::shared_ptr<const Snapshot>(std::move(snapshot));
}

}  // namespace sandpool::vm
