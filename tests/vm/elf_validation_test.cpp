// Malformed guest binaries are refused before anything runs, each with a
// message that names what is wrong.
#include <elf.h>
#include <gtest/gtest.h>

#include <cstring>

#include "guest_files.h"
#include "vm/guest_image.h"

namespace sandpool::vm {
namespace {

using sandpool::testing::readGuest;

class ElfValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    elf_ = readGuest("hello");
    ASSERT_GT(elf_.size(), sizeof(Elf64_Ehdr));
  }

  Elf64_Ehdr* header() { return reinterpret_cast<Elf64_Ehdr*>(elf_.data()); }
  Elf64_Phdr* segment(int loadable_index) {
    int seen = 0;
    for (int i = 0; i < header()->e_phnum; i++) {
      auto* ph =
          reinterpret_cast<Elf64_Phdr*>(elf_.data() + header()->e_phoff + i * sizeof(Elf64_Phdr));
      if (ph->p_type == PT_LOAD && seen++ == loadable_index) return ph;
    }
    ADD_FAILURE() << "no loadable segment " << loadable_index;
    return nullptr;
  }

  void expectRefused(const std::string& message_part, const VmConfig& config = {}) {
    auto image = GuestImage::parse(elf_, config);
    ASSERT_FALSE(image.ok());
    EXPECT_EQ(image.error().kind, ErrorKind::kInvalidGuest);
    EXPECT_NE(image.error().message.find(message_part), std::string::npos) << image.error().message;
  }

  std::vector<uint8_t> elf_;
};

TEST_F(ElfValidationTest, TheUnmodifiedGuestIsAccepted) {
  auto image = GuestImage::parse(elf_, VmConfig{});
  ASSERT_TRUE(image.ok()) << image.error().describe();
  EXPECT_EQ(image->segments().size(), 3u);
}

TEST_F(ElfValidationTest, EmptyFileIsRefused) {
  elf_.clear();
  expectRefused("empty");
}

TEST_F(ElfValidationTest, NonElfIsRefused) {
  elf_.assign(4096, 0x90);
  expectRefused("not an ELF file");
}

TEST_F(ElfValidationTest, FileCutInsideTheHeadersIsRefused) {
  elf_.resize(100);
  expectRefused("exceeds the file");
}

TEST_F(ElfValidationTest, FileCutInsideASegmentIsRefused) {
  elf_.resize(segment(0)->p_offset + segment(0)->p_filesz / 2);
  expectRefused("exceeds the file");
}

TEST_F(ElfValidationTest, WrongMachineIsRefused) {
  header()->e_machine = EM_AARCH64;
  expectRefused("not x86-64");
}

TEST_F(ElfValidationTest, ThirtyTwoBitClassIsRefused) {
  header()->e_ident[EI_CLASS] = ELFCLASS32;
  expectRefused("");  // libelf or our class check, either way refused
}

TEST_F(ElfValidationTest, PositionIndependentExecutableIsRefused) {
  header()->e_type = ET_DYN;
  expectRefused("not a static non-PIE executable");
}

TEST_F(ElfValidationTest, OverlappingSegmentsAreRefused) {
  segment(1)->p_vaddr = segment(0)->p_vaddr + 0x10;
  expectRefused("segments overlap");
}

TEST_F(ElfValidationTest, SegmentBeyondGuestMemoryIsRefused) {
  segment(2)->p_memsz = uint64_t{1} << 40;
  expectRefused("is outside guest memory");
}

TEST_F(ElfValidationTest, SegmentBelowTheImageBaseIsRefused) {
  segment(0)->p_vaddr = 0;
  expectRefused("is outside guest memory");
}

TEST_F(ElfValidationTest, EntryOutsideCodeIsRefused) {
  header()->e_entry = segment(2)->p_vaddr;
  expectRefused("not in an executable segment");
}

TEST_F(ElfValidationTest, WritableAndExecutableSegmentIsRefused) {
  segment(0)->p_flags |= PF_W;
  expectRefused("W^X");
}

TEST_F(ElfValidationTest, FileOverTheSizeLimitIsRefused) {
  VmConfig config;
  config.max_binary_size = 1024;
  expectRefused("over the limit", config);
}

TEST_F(ElfValidationTest, DynamicallyLinkedIsRefused) {
  segment(1)->p_type = PT_INTERP;
  expectRefused("dynamically linked");
}

}  // namespace
}  // namespace sandpool::vm
