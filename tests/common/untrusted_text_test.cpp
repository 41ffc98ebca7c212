// escapeUntrusted(): the rule docs/security.md states for guest- and
// client-supplied text in logs, errors and on the CLI's terminal.
#include "common/untrusted_text.h"

#include <string>

#include <gtest/gtest.h>

namespace sandpool::text {
namespace {

TEST(UntrustedText, PrintableUtf8PassesUnchanged) {
  EXPECT_EQ(escapeUntrusted("guest aborted: déjà vu, 漢字, 🙂 ok"),
            "guest aborted: déjà vu, 漢字, 🙂 ok");
}

TEST(UntrustedText, LineBreaksCannotStartAnotherLogLine) {
  std::string forged = "x\n2026-01-01T00:00:00.000 info event=login tenant=beta\r\tend";
  EXPECT_EQ(escapeUntrusted(forged),
            "x\\n2026-01-01T00:00:00.000 info event=login tenant=beta\\r\\tend");
}

TEST(UntrustedText, ControlCharactersAndTerminalEscapesAreHex) {
  EXPECT_EQ(escapeUntrusted(std::string("\x1b[2J\x07\x7f\0z", 8)), "\\x1b[2J\\x07\\x7f\\x00z");
}

TEST(UntrustedText, InvalidUtf8BytesAreHexEachOnTheirOwn) {
  EXPECT_EQ(escapeUntrusted("a\xff\xfe"
                            "b"),
            "a\\xff\\xfeb");
  EXPECT_EQ(escapeUntrusted("\xc3"), "\\xc3") << "a sequence cut short";
  EXPECT_EQ(escapeUntrusted("\xc0\xaf"), "\\xc0\\xaf") << "an overlong '/'";
  EXPECT_EQ(escapeUntrusted("\xed\xa0\x80"), "\\xed\\xa0\\x80") << "a UTF-16 surrogate";
  EXPECT_EQ(escapeUntrusted("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80") << "past U+10FFFF";
  EXPECT_EQ(escapeUntrusted("\xe2\x82z"), "\\xe2\\x82z") << "a continuation byte missing";
}

TEST(UntrustedText, C1ControlsSeparatorsAndBidiOverridesAreEscaped) {
  EXPECT_EQ(escapeUntrusted("\xc2\x9b"
                            "31m"),
            "\\u009b31m")
      << "CSI, the one-character terminal escape";
  EXPECT_EQ(escapeUntrusted("a\xe2\x80\xa8"
                            "b\xe2\x80\xa9"),
            "a\\u2028b\\u2029");
  EXPECT_EQ(escapeUntrusted("\xe2\x80\xae"
                            "cba\xe2\x81\xa6"),
            "\\u202ecba\\u2066");
}

TEST(UntrustedText, QuotedTextCannotCloseItsField) {
  EXPECT_EQ(escapeUntrusted(R"(x" tenant="beta \)"), R"(x\" tenant=\"beta \\)");
  EXPECT_EQ(escapeUntrusted(R"(x" \)", Escape::kLine), R"(x" \)");
}

TEST(UntrustedText, TerminalTextKeepsLineFeedsAndTabsOnly) {
  EXPECT_EQ(escapeUntrusted("one\n\ttwo\r\x1b[K\n", Escape::kText), "one\n\ttwo\\r\\x1b[K\n");
  EXPECT_EQ(escapeUntrusted("one\ntwo", Escape::kLine), "one\\ntwo");
}

TEST(UntrustedText, QuotedTextPassesTheTerminalEscapingUnchanged) {
  std::string raw = "a\nb\xff\x1b\"c\\";
  std::string quoted = escapeUntrusted(raw);
  EXPECT_EQ(escapeUntrusted(quoted, Escape::kLine, kNoLimit), quoted);
}

TEST(UntrustedText, LongTextIsCutWithItsSizeSaid) {
  std::string huge(1 << 20, 'a');
  std::string out = escapeUntrusted(huge);
  EXPECT_EQ(out, std::string(kMaxUntrustedBytes, 'a') + "...[truncated, 1048576 bytes in all]");
  EXPECT_EQ(escapeUntrusted(huge, Escape::kQuoted, kNoLimit), huge);
}

TEST(UntrustedText, TruncationCountsEscapedBytesAndNeverSplitsACharacter) {
  std::string newlines(600, '\n');
  EXPECT_EQ(escapeUntrusted(newlines, Escape::kQuoted, 9),
            "\\n\\n\\n\\n...[truncated, 600 bytes in all]");
  EXPECT_EQ(escapeUntrusted("ab漢字", Escape::kQuoted, 4), "ab...[truncated, 8 bytes in all]");
  EXPECT_EQ(escapeUntrusted("ab漢字", Escape::kQuoted, 8), "ab漢字");
}

TEST(UntrustedText, DecodesOnlyShortestFormScalarValues) {
  auto euro = decodeUtf8Char("\xe2\x82\xac rest");
  ASSERT_TRUE(euro);
  EXPECT_EQ(euro->code_point, U'€');
  EXPECT_EQ(euro->size, 3u);
  EXPECT_FALSE(decodeUtf8Char(""));
  EXPECT_FALSE(decodeUtf8Char("\x80"));
  EXPECT_FALSE(decodeUtf8Char("\xe0\x80\x80")) << "overlong NUL";
  EXPECT_FALSE(decodeUtf8Char("\xf8\x88\x80\x80\x80")) << "five-byte form";
}

}  // namespace
}  // namespace sandpool::text
