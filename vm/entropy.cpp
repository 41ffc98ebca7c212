#include "vm/entropy.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace sandpool::vm {

namespace {

constexpr uint64_t kRekeyBytes = 1 << 20;

uint32_t rotl(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

void quarterRound(uint32_t* s, int a, int b, int c, int d) {
  s[a] += s[b], s[d] = rotl(s[d] ^ s[a], 16);
  s[c] += s[d], s[b] = rotl(s[b] ^ s[c], 12);
  s[a] += s[b], s[d] = rotl(s[d] ^ s[a], 8);
  s[c] += s[d], s[b] = rotl(s[b] ^ s[c], 7);
}

class ChaChaStream {
 public:
  Expected<void> fill(std::span<uint8_t> out) {
    while (!out.empty()) {
      if (used_ == sizeof block_) {
        if (auto refilled = refill(); !refilled) return refilled;
      }
      size_t n = std::min(out.size(), sizeof block_ - used_);
      std::memcpy(out.data(), block_ + used_, n);
      std::memset(block_ + used_, 0, n);  // forward secrecy within the block
      used_ += n;
      out = out.subspan(n);
    }
    return {};
  }

 private:
  Expected<void> rekey() {
    uint8_t seed[40];
    size_t got = 0;
    while (got < sizeof seed) {
      ssize_t n = getrandom(seed + got, sizeof seed - got, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0)
        return makeError(ErrorKind::kInternal, std::string("getrandom: ") + std::strerror(errno));
      got += static_cast<size_t>(n);
    }
    static constexpr uint32_t kSigma[4] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574};
    std::memcpy(state_, kSigma, sizeof kSigma);
    std::memcpy(state_ + 4, seed, 32);
    state_[12] = 0;
    state_[13] = 0;
    std::memcpy(state_ + 14, seed + 32, 8);
    std::memset(seed, 0, sizeof seed);
    produced_ = 0;
    return {};
  }

  Expected<void> refill() {
    if (produced_ == 0 || produced_ >= kRekeyBytes) {
      if (auto rekeyed = rekey(); !rekeyed) return rekeyed;
    }
    uint32_t x[16];
    std::memcpy(x, state_, sizeof x);
    for (int i = 0; i < 10; i++) {
      quarterRound(x, 0, 4, 8, 12), quarterRound(x, 1, 5, 9, 13);
      quarterRound(x, 2, 6, 10, 14), quarterRound(x, 3, 7, 11, 15);
      quarterRound(x, 0, 5, 10, 15), quarterRound(x, 1, 6, 11, 12);
      quarterRound(x, 2, 7, 8, 13), quarterRound(x, 3, 4, 9, 14);
    }
    for (int i = 0; i < 16; i++) x[i] += state_[i];
    std::memcpy(block_, x, sizeof block_);
    if (++state_[12] == 0) state_[13]++;
    produced_ += sizeof block_;
    used_ = 0;
    return {};
  }

  uint32_t state_[16] = {};
  uint8_t block_[64] = {};
  size_t used_ = sizeof block_;
  uint64_t produced_ = 0;
};

}  // namespace

Expected<void> fillEntropy(std::span<uint8_t> out) {
  thread_local ChaChaStream stream;
  return stream.fill(out);
}

}  // namespace sandpool::vm
