// The guest ABI's messages as pure functions over bytes: the boot info the
// host writes before boot, the export table the guest leaves at READY, the
// call request, the result at DONE, host calls and their replies, and what
// an ABORT code means. Layouts come from the ABI header (sandpool/abi.h),
// the one source of truth shared with the guest SDK; this module only
// encodes and checks them. Every decoder bounds-checks its span and refuses
// bad bytes with a typed Error naming the field and its values.
//
// Nothing here touches guest memory or a vCPU: callers read the bytes
// through GuestView (vm/guest_view.h) and pass spans in, so every function
// is testable without a VM (tests/vm/guest_protocol_test.cpp).
//
// Thread: any; no state.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vm/error.h"
#include "vm/layout.h"
#include "vm/value.h"

namespace sandpool::vm {

// Bytes of fresh entropy the boot info and every call request carry.
inline constexpr size_t kEntropyBytes = 32;
using Entropy = std::span<const uint8_t, kEntropyBytes>;

// Writes the boot info for `layout` at the start of `destination` (the page
// at SANDPOOL_BOOT_INFO_ADDR). kInternal if it does not fit.
Expected<void> writeBootInfo(std::span<uint8_t> destination, const MemoryLayout& layout,
                             Entropy entropy);

// Parses the export table the guest wrote before READY: kInvalidGuest
// naming the export and what is wrong with it.
Expected<std::vector<FunctionSignature>> parseExportTable(std::span<const uint8_t> table);

// kBadArguments unless `args` match the export's parameters.
Expected<void> checkArguments(const FunctionSignature& signature, const std::vector<Value>& args);

// The call request for export `function_index`, written over `message`:
// header and encoded arguments, at most `capacity` bytes (the input buffer),
// else kLimitExceeded naming both sizes. `message` keeps its capacity, so a
// caller that passes the same vector each call allocates nothing once warm.
Expected<void> encodeCallRequest(uint32_t function_index, const std::vector<Value>& args,
                                 Entropy entropy, uint64_t capacity, std::vector<uint8_t>& message);

// The result the guest left in the output buffer (`output`, the whole
// buffer), checked against the export it answers: the value, kGuestAbort
// with the guest's message for an ERROR status, or kGuestFault for a
// malformed header, value or a result of the wrong type.
Expected<Value> decodeResult(std::span<const uint8_t> output, const FunctionSignature& signature);

// A host call as the guest wrote it into the host-call buffer (`buffer`,
// the whole buffer): kBadHostCall for a bad header, argument or trailing bytes.
struct HostCallRequest {
  std::string name;
  std::vector<Value> args;
};
Expected<HostCallRequest> decodeHostCall(std::span<const uint8_t> buffer);

// The reply to a host call, at most `capacity` bytes (the host-call
// buffer): the value or the error's message; a reply that does not fit
// becomes an ERROR saying so.
std::vector<uint8_t> encodeHostReply(const Expected<Value>& reply, uint64_t capacity);

// The error an ABORT report stands for: its code (abi.h) picks the kind,
// `message` is the guest's text.
Error abortError(uint32_t code, std::string_view message);

}  // namespace sandpool::vm
