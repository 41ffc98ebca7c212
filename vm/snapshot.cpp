#include "vm/snapshot.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <sandpool/abi.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "vm/entropy.h"
#include "vm/guest_session.h"
#include "vm/guest_view.h"
#include "vm/watchdog.h"

namespace sandpool::vm {

namespace {

Error syscallError(const std::string& step) {
  return makeError(ErrorKind::kInternal, step + ": " + std::strerror(errno));
}

Error badTable(const std::string& what) {
  return makeError(ErrorKind::kInvalidGuest, "export table: " + what);
}

// Writes the ELF segments and the boot info into the fresh image.
void writeImage(std::span<uint8_t> image, const GuestImage& guest, const MemoryLayout& layout) {
  for (const ImageSegment& s : guest.segments()) {
    // A segment of zeroes only (.bss) has no file bytes, and no pointer to them.
    if (s.data.empty()) continue;
    std::memcpy(image.data() + s.vaddr + s.data_offset, s.data.data(), s.data.size());
  }
  sandpool_boot_info boot{};
  boot.magic = SANDPOOL_BOOT_MAGIC;
  boot.abi_version = SANDPOOL_ABI_VERSION;
  boot.memory_size = layout.memory_size;
  boot.input_addr = layout.input_addr;
  boot.input_size = layout.input_size;
  boot.output_addr = layout.output_addr;
  boot.output_size = layout.output_size;
  boot.host_call_addr = layout.host_call_addr;
  boot.host_call_size = layout.host_call_size;
  boot.heap_start = layout.heap_start;
  boot.heap_end = layout.heap_end;
  boot.stack_top = layout.stack_top;
  fillEntropy(boot.entropy);
  std::memcpy(image.data() + layout.boot_info_addr, &boot, sizeof boot);
}

}  // namespace

Expected<std::vector<FunctionSignature>> parseExportTable(std::span<const uint8_t> table) {
  sandpool_export_table_header header;
  if (table.size() < sizeof header) return badTable("shorter than its header");
  std::memcpy(&header, table.data(), sizeof header);
  if (header.magic != SANDPOOL_EXPORTS_MAGIC) return badTable("bad magic");
  if (header.count > SANDPOOL_MAX_EXPORTS) {
    return badTable(std::to_string(header.count) + " exports, over the limit of " +
                    std::to_string(SANDPOOL_MAX_EXPORTS));
  }
  std::span<const uint8_t> in = table.subspan(sizeof header);
  std::vector<FunctionSignature> exports;
  std::set<std::string, std::less<>> names;
  auto take = [&in](size_t n) -> std::optional<std::span<const uint8_t>> {
    if (in.size() < n) return std::nullopt;
    auto part = in.first(n);
    in = in.subspan(n);
    return part;
  };
  for (uint32_t i = 0; i < header.count; i++) {
    const std::string where = "export " + std::to_string(i);
    auto fixed = take(2);
    if (!fixed) return badTable(where + " truncated");
    FunctionSignature sig;
    const uint8_t result = (*fixed)[0], param_count = (*fixed)[1];
    if (!isValidValueType(result)) return badTable(where + " has result type tag " + std::to_string(result));
    if (param_count > SANDPOOL_MAX_PARAMS) return badTable(where + " has too many parameters");
    sig.result = static_cast<ValueType>(result);
    auto params = take(param_count);
    if (!params) return badTable(where + " truncated");
    for (uint8_t tag : *params) {
      if (!isValidValueType(tag) || tag == SANDPOOL_TYPE_VOID) {
        return badTable(where + " has parameter type tag " + std::to_string(tag));
      }
      sig.params.push_back(static_cast<ValueType>(tag));
    }
    auto size = take(2);
    if (!size) return badTable(where + " truncated");
    const uint16_t name_size = static_cast<uint16_t>((*size)[0] | (*size)[1] << 8);
    if (name_size == 0 || name_size > SANDPOOL_MAX_NAME) return badTable(where + " has a bad name length");
    auto name = take(name_size);
    if (!name) return badTable(where + " truncated");
    sig.name.assign(name->begin(), name->end());
    if (!names.insert(sig.name).second) return badTable("function '" + sig.name + "' exported twice");
    exports.push_back(std::move(sig));
  }
  return exports;
}

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
    return syscallError("ftruncate of the snapshot memfd to " + std::to_string(config.memory_size));
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
    writeImage(std::span<uint8_t>(memory->hostBase(), config.memory_size), image, snapshot->layout_);
    if (auto prepared = backend.prepareImage(std::span<uint8_t>(memory->hostBase(), config.memory_size),
                                             snapshot->layout_);
        !prepared) {
      return prepared.takeError();
    }
    auto vcpu = backend.createVcpu(*memory, snapshot->layout_, image.entry());
    if (!vcpu) return vcpu.takeError();

    GuestSession session(GuestSession::Phase::kBoot, *memory, snapshot->layout_, config, **vcpu, nullptr);
    RunExit exit;
    {
      Watchdog::Guard guard(Watchdog::instance(), **vcpu,
                            std::chrono::steady_clock::now() + config.boot_timeout);
      exit = (*vcpu)->run(session);
    }
    if (auto failed = session.failure(exit, config.boot_timeout)) {
      Error error = std::move(*failed);
      error.message = "guest initialisation failed: " + error.message;
      if (!session.output().empty()) error.message += " (output: " + session.output() + ")";
      if (error.kind != ErrorKind::kInternal) error.kind = ErrorKind::kInvalidGuest;
      return error;
    }
    auto table = GuestView(*memory, snapshot->layout_)
                     .read(snapshot->layout_.output_addr,
                           std::min<uint64_t>(session.finishedSize(), snapshot->layout_.output_size),
                           "export table");
    if (!table) return table.takeError();
    auto exports = parseExportTable(*table);
    if (!exports) return exports.takeError();
    snapshot->exports_ = std::move(exports.value());
    snapshot->cpu_ = session.takeReadyState();
  }

  // Sealed: no one, this process included, can change the snapshot now.
  if (::fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0) {
    return syscallError("sealing the snapshot memfd");
  }
  auto contents = Mapping::map(config.memory_size, PROT_READ, MAP_SHARED | MAP_NORESERVE, memfd.get(),
                               "snapshot contents");
  if (!contents) return contents.takeError();
  struct stat st;
  if (::fstat(memfd.get(), &st) != 0) return syscallError("fstat of the snapshot memfd");
  snapshot->resident_pages_ = static_cast<uint64_t>(st.st_blocks) * 512 / kPageSize;
  snapshot->contents_ = std::move(contents.value());
  snapshot->memfd_ = std::move(memfd);
  return std::shared_ptr<const Snapshot>(std::move(snapshot));
}

}  // namespace sandpool::vm
