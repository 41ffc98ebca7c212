// Fresh entropy for every call (the ABI's call_header.entropy), without a
// system call per call: a per-thread ChaCha20 keystream keyed from
// getrandom() and re-keyed every kRekeyBytes.
#pragma once

#include <cstdint>
#include <span>

#include "vm/error.h"

namespace sandpool::vm {

// Fills `out` with cryptographically strong random bytes. Any thread.
// kInternal if the kernel's random source fails (getrandom).
Expected<void> fillEntropy(std::span<uint8_t> out);

}  // namespace sandpool::vm
