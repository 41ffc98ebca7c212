#include "vm/guest_image.h"

#include <gelf.h>
#include <libelf.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include <sandpool/abi.h>

#include <fmt/format.h>

#include "vm/layout.h"

namespace sandpool::vm {

namespace {

constexpr size_t kMaxSegments = 16;

Error invalid(const std::string& what) { return makeError(ErrorKind::kInvalidGuest, what); }

struct ElfCloser {
  void operator()(Elf* elf) const { elf_end(elf); }
};

uint8_t accessOf(uint32_t flags) {
  uint8_t access = kAccessNone;
  if (flags & PF_R) access |= kAccessRead;
  if (flags & PF_W) access |= kAccessWrite;
  if (flags & PF_X) access |= kAccessExecute;
  return access;
}

}  // namespace

uint64_t GuestImage::end() const {
  uint64_t end = SANDPOOL_IMAGE_BASE;
  for (const ImageSegment& s : segments_) end = std::max(end, s.vaddr + s.mem_size);
  return end;
}

Expected<GuestImage> GuestImage::parse(std::span<const uint8_t> file, const VmConfig& config) {
  if (file.empty()) return invalid("guest binary is empty");
  if (file.size() > config.max_binary_size) {
    return invalid(fmt::format("guest binary is {} bytes, over the limit of {}", file.size(),
                               config.max_binary_size));
  }
  elf_version(EV_CURRENT);
  // libelf reads but never writes through this pointer (ELF_C_READ_MEMORY).
  std::unique_ptr<Elf, ElfCloser> elf(
      elf_memory(const_cast<char*>(reinterpret_cast<const char*>(file.data())), file.size()));
  if (!elf || elf_kind(elf.get()) != ELF_K_ELF) return invalid("not an ELF file");
  GElf_Ehdr ehdr;
  if (!gelf_getehdr(elf.get(), &ehdr)) {
    return invalid(std::string("ELF header unreadable: ") + elf_errmsg(-1));
  }
  if (ehdr.e_ident[EI_CLASS] != ELFCLASS64) return invalid("ELF class is not 64-bit");
  if (ehdr.e_ident[EI_DATA] != ELFDATA2LSB) return invalid("ELF is not little-endian");
  if (ehdr.e_machine != EM_X86_64) {
    return invalid(fmt::format("ELF machine is {}, not x86-64 (62)", ehdr.e_machine));
  }
  if (ehdr.e_type != ET_EXEC) {
    return invalid(
        fmt::format("ELF type is {}, not a static non-PIE executable (ET_EXEC)", ehdr.e_type));
  }

  size_t phnum = 0;
  if (elf_getphdrnum(elf.get(), &phnum) != 0) {
    return invalid(std::string("ELF program headers unreadable: ") + elf_errmsg(-1));
  }
  // libelf reports no program headers for a table cut short; the header's
  // own count says how many there should be.
  const uint64_t table_size = uint64_t{ehdr.e_phnum} * sizeof(Elf64_Phdr);
  if (ehdr.e_phoff > file.size() || table_size > file.size() - ehdr.e_phoff) {
    return invalid(fmt::format("ELF program header table [{}, +{}) exceeds the file ({} bytes)",
                               toHex(ehdr.e_phoff), table_size, file.size()));
  }
  GuestImage image;
  image.entry_ = ehdr.e_entry;
  for (size_t i = 0; i < phnum; i++) {
    GElf_Phdr ph;
    if (!gelf_getphdr(elf.get(), static_cast<int>(i), &ph)) {
      return invalid(fmt::format("ELF program header {} unreadable: {}", i, elf_errmsg(-1)));
    }
    if (ph.p_type == PT_INTERP || ph.p_type == PT_DYNAMIC) {
      return invalid(fmt::format("ELF is dynamically linked (program header {})", i));
    }
    if (ph.p_type == PT_TLS)
      return invalid("ELF uses thread-local storage, which guests do not have");
    if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;

    const std::string name = fmt::format("ELF segment {}", i);
    if (image.segments_.size() == kMaxSegments) {
      return invalid(fmt::format("ELF has more than {} loadable segments", kMaxSegments));
    }
    if (ph.p_filesz > ph.p_memsz)
      return invalid(fmt::format("{} file size exceeds its memory size", name));
    if (ph.p_offset > file.size() || ph.p_filesz > file.size() - ph.p_offset) {
      return invalid(fmt::format("{} file range [{}, +{}) exceeds the file ({} bytes)", name,
                                 toHex(ph.p_offset), toHex(ph.p_filesz), file.size()));
    }
    if (ph.p_vaddr < SANDPOOL_IMAGE_BASE || ph.p_vaddr >= config.memory_size ||
        ph.p_memsz > config.memory_size - ph.p_vaddr) {
      return invalid(fmt::format("{} [{}, {}) is outside guest memory [{}, {}) ({} MiB)", name,
                                 toHex(ph.p_vaddr), toHex(ph.p_vaddr + ph.p_memsz),
                                 toHex(SANDPOOL_IMAGE_BASE), toHex(config.memory_size),
                                 config.memory_size / kMiB));
    }
    const uint8_t access = accessOf(ph.p_flags);
    if ((access & kAccessWrite) && (access & kAccessExecute)) {
      return invalid(fmt::format("{} is both writable and executable (W^X)", name));
    }
    ImageSegment segment;
    segment.vaddr = ph.p_vaddr & ~(kPageSize - 1);
    segment.data_offset = ph.p_vaddr - segment.vaddr;
    segment.mem_size =
        ((ph.p_vaddr + ph.p_memsz + kPageSize - 1) & ~(kPageSize - 1)) - segment.vaddr;
    segment.access = access;
    segment.data.assign(file.begin() + ph.p_offset, file.begin() + ph.p_offset + ph.p_filesz);
    image.segments_.push_back(std::move(segment));
  }
  if (image.segments_.empty()) return invalid("ELF has no loadable segments");

  std::sort(image.segments_.begin(), image.segments_.end(),
            [](const ImageSegment& a, const ImageSegment& b) { return a.vaddr < b.vaddr; });
  for (size_t i = 1; i < image.segments_.size(); i++) {
    const ImageSegment& prev = image.segments_[i - 1];
    const ImageSegment& cur = image.segments_[i];
    if (cur.vaddr < prev.vaddr + prev.mem_size) {
      return invalid(fmt::format("ELF segments overlap: [{}, {}) and [{}, {}) (page granularity)",
                                 toHex(prev.vaddr), toHex(prev.vaddr + prev.mem_size),
                                 toHex(cur.vaddr), toHex(cur.vaddr + cur.mem_size)));
    }
  }
  const bool entry_in_code =
      std::any_of(image.segments_.begin(), image.segments_.end(), [&](const auto& s) {
        return (s.access & kAccessExecute) && image.entry_ >= s.vaddr &&
               image.entry_ < s.vaddr + s.mem_size;
      });
  if (!entry_in_code)
    return invalid(
        fmt::format("ELF entry point {} is not in an executable segment", toHex(image.entry_)));
  return image;
}

}  // namespace sandpool::vm
