// The emulated backend's finder of privileged instructions: what it decodes
// and which code ranges it hooks.
#include <gtest/gtest.h>

#include <vector>

#include "vm/emulated/privileged_instructions.h"

namespace sandpool::vm {
namespace {

using Kind = PrivilegedInstruction::Kind;

std::optional<PrivilegedInstruction> decode(std::vector<uint8_t> code) {
  return decodePrivileged(code);
}

TEST(PrivilegedInstructions, DecodesMsrAccessWithAndWithoutPrefixes) {
  EXPECT_EQ(decode({0x0f, 0x30})->kind, Kind::kWrmsr);
  EXPECT_EQ(decode({0x0f, 0x32})->kind, Kind::kRdmsr);
  EXPECT_EQ(decode({0x66, 0x2e, 0x48, 0x0f, 0x30})->kind, Kind::kWrmsr);
  // A REX before another prefix is ignored, but the instruction still runs.
  EXPECT_EQ(decode({0x48, 0x66, 0x0f, 0x32})->kind, Kind::kRdmsr);
}

TEST(PrivilegedInstructions, DecodesMovToControlRegisterWithItsRegisters) {
  auto cr3 = decode({0x0f, 0x22, 0xd8});  // mov cr3, rax
  ASSERT_TRUE(cr3);
  EXPECT_EQ(cr3->kind, Kind::kMovToControlRegister);
  EXPECT_EQ(cr3->control_register, 3);
  EXPECT_EQ(cr3->source_register, 0);
  auto cr8 = decode({0x45, 0x0f, 0x22, 0xc7});  // mov cr8, r15 (REX.R and REX.B)
  ASSERT_TRUE(cr8);
  EXPECT_EQ(cr8->control_register, 8);
  EXPECT_EQ(cr8->source_register, 15);
  auto stale_rex = decode({0x45, 0x66, 0x0f, 0x22, 0xc7});  // the REX is ignored: mov cr0, rdi
  ASSERT_TRUE(stale_rex);
  EXPECT_EQ(stale_rex->control_register, 0);
  EXPECT_EQ(stale_rex->source_register, 7);
}

TEST(PrivilegedInstructions, OtherInstructionsAreNotPrivileged) {
  EXPECT_FALSE(decode({0x0f, 0x20, 0xc0}));  // mov rax, cr0 (a read)
  EXPECT_FALSE(
      decode({0xb8, 0x0f, 0x30, 0x00, 0x00}));  // mov eax, 0x300f: the pair is an immediate
  EXPECT_FALSE(decode({0x0f}));                 // truncated
  EXPECT_FALSE(decode({0x0f, 0x22}));
}

TEST(PrivilegedInstructions, CandidatesCoverThePrefixesBeforeEachPairInCodeOnly) {
  MemoryLayout layout;
  layout.memory_size = 0x3000;
  layout.regions = {{0x1000, 0x1000, kAccessRead | kAccessExecute, "image"},
                    {0x2000, 0x1000, kAccessRead | kAccessWrite, "heap"}};
  std::vector<uint8_t> memory(layout.memory_size, 0x90);
  memory[0x1004] = 0x0f, memory[0x1005] = 0x30;  // near the region's start
  memory[0x1100] = 0x0f, memory[0x1101] = 0x22;
  memory[0x1108] = 0x0f, memory[0x1109] = 0x32;  // overlaps the previous range
  memory[0x2100] = 0x0f, memory[0x2101] = 0x30;  // data, never executed
  auto ranges = findPrivilegedCandidates(memory, layout);
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0].first, 0x1000u);
  EXPECT_EQ(ranges[0].last, 0x1004u);
  EXPECT_EQ(ranges[1].first, 0x1100u - 13);
  EXPECT_EQ(ranges[1].last, 0x1108u);
}

}  // namespace
}  // namespace sandpool::vm
