// The translation cache: found by the module's SHA-256, bounded by the size
// of what it keeps, least recently used dropped first.
#include <gtest/gtest.h>

#include "wasm/translation_cache.h"

namespace sandpool::wasm {
namespace {

std::vector<uint8_t> elfOf(size_t size, uint8_t fill) { return std::vector<uint8_t>(size, fill); }

TEST(TranslationCache, FindsWhatItKeptBySha256) {
  TranslationCache cache(100);
  EXPECT_FALSE(cache.find("aa"));
  cache.insert("aa", elfOf(10, 1));
  auto found = cache.find("aa");
  ASSERT_TRUE(found);
  EXPECT_EQ(*found, elfOf(10, 1));
  EXPECT_FALSE(cache.find("bb"));
}

TEST(TranslationCache, PastItsBoundTheLeastRecentlyUsedGoFirst) {
  TranslationCache cache(100);
  cache.insert("first", elfOf(40, 1));
  cache.insert("second", elfOf(40, 2));
  ASSERT_TRUE(cache.find("first"));  // now the most recently used
  cache.insert("third", elfOf(40, 3));
  EXPECT_TRUE(cache.find("first"));
  EXPECT_FALSE(cache.find("second"));
  EXPECT_TRUE(cache.find("third"));
  EXPECT_EQ(cache.sizeBytes(), 80u);
}

TEST(TranslationCache, AnElfLargerThanTheBoundIsNotKept) {
  TranslationCache cache(100);
  cache.insert("small", elfOf(50, 1));
  cache.insert("huge", elfOf(101, 2));
  EXPECT_FALSE(cache.find("huge"));
  EXPECT_TRUE(cache.find("small"));
  EXPECT_EQ(cache.sizeBytes(), 50u);
}

TEST(TranslationCache, KeepingTheSameModuleAgainReplacesItsEntry) {
  TranslationCache cache(100);
  cache.insert("aa", elfOf(30, 1));
  cache.insert("aa", elfOf(20, 2));
  EXPECT_EQ(cache.sizeBytes(), 20u);
  EXPECT_EQ(*cache.find("aa"), elfOf(20, 2));
}

}  // namespace
}  // namespace sandpool::wasm
