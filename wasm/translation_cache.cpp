#include "wasm/translation_cache.h"

namespace sandpool::wasm {

std::optional<std::vector<uint8_t>> TranslationCache::find(const std::string& module_sha256) {
  std::lock_guard lock(mutex_);
  auto it = by_sha256_.find(module_sha256);
  if (it == by_sha256_.end()) return std::nullopt;
  entries_.splice(entries_.begin(), entries_, it->second);
  return it->second->elf;
}

void TranslationCache::insert(const std::string& module_sha256, std::vector<uint8_t> elf) {
  if (elf.size() > max_bytes_) return;
  std::lock_guard lock(mutex_);
  if (auto it = by_sha256_.find(module_sha256); it != by_sha256_.end()) {
    size_bytes_ -= it->second->elf.size();
    entries_.erase(it->second);
    by_sha256_.erase(it);
  }
  size_bytes_ += elf.size();
  entries_.push_front(Entry{module_sha256, std::move(elf)});
  by_sha256_[module_sha256] = entries_.begin();
  while (size_bytes_ > max_bytes_) {
    const Entry& oldest = entries_.back();
    size_bytes_ -= oldest.elf.size();
    by_sha256_.erase(oldest.module_sha256);
    entries_.pop_back();
  }
}

uint64_t TranslationCache::sizeBytes() const {
  std::lock_guard lock(mutex_);
  return size_bytes_;
}

}  // namespace sandpool::wasm
