// Guest ELFs translated from Wasm modules, by the module's SHA-256, so that
// the same module uploaded again (under another name, by another tenant)
// does not run the tools again. Bounded by the total size of the ELFs it
// holds; past the bound the least recently used go first, and an ELF larger
// than the whole bound is not kept. In memory only: what survives a restart
// is the stored guest ELF (docs/wasm.md).
//
// Threads: any, concurrently (one mutex).
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace sandpool::wasm {

class TranslationCache {
 public:
  explicit TranslationCache(uint64_t max_bytes) : max_bytes_(max_bytes) {}

  // The ELF translated from the module with this SHA-256 (hex), if kept;
  // it becomes the most recently used.
  std::optional<std::vector<uint8_t>> find(const std::string& module_sha256);
  // Keeps `elf` as the translation of that module, dropping the least
  // recently used entries until the total fits the bound.
  void insert(const std::string& module_sha256, std::vector<uint8_t> elf);

  uint64_t sizeBytes() const;

 private:
  struct Entry {
    std::string module_sha256;
    std::vector<uint8_t> elf;
  };

  const uint64_t max_bytes_;
  mutable std::mutex mutex_;
  std::list<Entry> entries_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> by_sha256_;
  uint64_t size_bytes_ = 0;
};

}  // namespace sandpool::wasm
