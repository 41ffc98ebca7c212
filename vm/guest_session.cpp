#include "vm/guest_session.h"

#include <sandpool/abi.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace sandpool::vm {

namespace {

constexpr uint64_t kMaxAbortMessage = 1024;

const char* vectorName(uint32_t vector) {
  switch (vector) {
    case 0: return "divide error";
    case 1: return "debug exception";
    case 3: return "breakpoint";
    case 4: return "overflow";
    case 5: return "bound range exceeded";
    case 6: return "invalid opcode";
    case 7: return "device not available";
    case 8: return "double fault";
    case 10: return "invalid TSS";
    case 11: return "segment not present";
    case 12: return "stack-segment fault";
    case 13: return "general protection fault";
    case 14: return "page fault";
    case 16: return "x87 floating-point exception";
    case 17: return "alignment check";
    case 18: return "machine check";
    case 19: return "SIMD floating-point exception";
    default: return "CPU exception";
  }
}

}  // namespace

std::string describeFault(const FaultInfo& fault) {
  std::string text = std::string(vectorName(fault.vector)) + " (vector " + std::to_string(fault.vector) + ")";
  if (fault.vector == 14) text += " at address " + toHex(fault.address);
  text += ", error code " + toHex(fault.error_code) + ", rip " + toHex(fault.rip);
  return text;
}

GuestSession::GuestSession(Phase phase, GuestMemory& memory, const MemoryLayout& layout,
                           const VmConfig& config, Vcpu& vcpu, HostFunctions* host_functions)
    : phase_(phase),
      guest_(memory, layout),
      layout_(layout),
      config_(config),
      vcpu_(vcpu),
      host_functions_(host_functions) {}

PortAction GuestSession::stopWith(Error error) {
  if (!error_) error_ = std::move(error);
  return PortAction::kStop;
}

PortAction GuestSession::onPortOut(uint16_t port, uint32_t value) {
  switch (port) {
    case SANDPOOL_PORT_READY:
      if (phase_ != Phase::kBoot) {
        return stopWith(makeError(ErrorKind::kGuestFault, "guest signalled READY during a call"));
      }
      finished_ = true;
      finished_size_ = value;
      ready_state_ = vcpu_.saveCpuState();
      return PortAction::kStop;
    case SANDPOOL_PORT_DONE:
      if (phase_ != Phase::kCall) {
        return stopWith(makeError(ErrorKind::kGuestFault, "guest signalled DONE before READY"));
      }
      finished_ = true;
      finished_size_ = value;
      return PortAction::kStop;
    case SANDPOOL_PORT_HOST_CALL: return serveHostCall();
    case SANDPOOL_PORT_ABORT: return reportAbort(value);
    case SANDPOOL_PORT_FAULT: return reportFault(value);
    default:
      return stopWith(makeError(ErrorKind::kGuestFault, "guest wrote to unknown I/O port " + toHex(port) +
                                                            " (rip " + toHex(vcpu_.readRegister(Register::kRip)) +
                                                            ")"));
  }
}

PortAction GuestSession::serveHostCall() {
  if (++host_calls_ > config_.max_host_calls) {
    return stopWith(makeError(ErrorKind::kLimitExceeded,
                              "guest made more than " + std::to_string(config_.max_host_calls) +
                                  " host calls in one call"));
  }
  auto area = guest_.read(layout_.host_call_addr, layout_.host_call_size, "host-call buffer");
  if (!area) return stopWith(area.takeError());
  sandpool_host_call_header header;
  std::memcpy(&header, area->data(), sizeof header);
  const uint64_t capacity = area->size() - sizeof header;
  if (header.magic != SANDPOOL_HOST_CALL_MAGIC) {
    return stopWith(makeError(ErrorKind::kBadHostCall, "host call header has bad magic " + toHex(header.magic)));
  }
  if (header.name_size == 0 || header.name_size > SANDPOOL_MAX_NAME || header.arg_count > SANDPOOL_MAX_PARAMS ||
      uint64_t{header.name_size} + header.args_size > capacity) {
    return stopWith(makeError(ErrorKind::kBadHostCall,
                              "host call header out of bounds: name " + std::to_string(header.name_size) +
                                  " bytes, " + std::to_string(header.arg_count) + " arguments in " +
                                  std::to_string(header.args_size) + " bytes, buffer " +
                                  std::to_string(capacity) + " bytes"));
  }
  auto body = area->subspan(sizeof header);
  const std::string name(body.begin(), body.begin() + header.name_size);
  std::span<const uint8_t> encoded = body.subspan(header.name_size, header.args_size);
  std::vector<Value> args;
  for (uint32_t i = 0; i < header.arg_count; i++) {
    auto arg = decodeValue(encoded);
    if (!arg) {
      return stopWith(makeError(ErrorKind::kBadHostCall,
                                "host call '" + name + "' argument " + std::to_string(i) + ": " +
                                    arg.error().message));
    }
    args.push_back(std::move(arg.value()));
  }
  if (!encoded.empty()) {
    return stopWith(makeError(ErrorKind::kBadHostCall, "host call '" + name + "' has " +
                                                           std::to_string(encoded.size()) +
                                                           " bytes after its arguments"));
  }

  if (name == SANDPOOL_HOST_PRINT) {
    if (args.size() != 1 || typeOf(args[0]) != ValueType::kString) {
      replyToGuest(makeError(ErrorKind::kBadHostCall, "print takes one string"));
      return PortAction::kResume;
    }
    const std::string& text = std::get<std::string>(args[0]);
    const uint64_t room = config_.max_output_bytes - std::min<uint64_t>(output_.size(), config_.max_output_bytes);
    if (text.size() > room) output_truncated_ = true;
    output_.append(text, 0, std::min<uint64_t>(room, text.size()));
    replyToGuest(Value(Void{}));
  } else if (host_functions_) {
    auto reply = host_functions_->callHostFunction(name, args);
    // The call's deadline passed while the host function was pending: the
    // call ends as a timeout, as it would have had the guest been running.
    if (!reply && reply.error().kind == ErrorKind::kTimeout) return stopWith(reply.takeError());
    replyToGuest(reply);
  } else {
    replyToGuest(makeError(ErrorKind::kBadHostCall, "unknown host function '" + name + "'"));
  }
  return PortAction::kResume;
}

void GuestSession::replyToGuest(const Expected<Value>& reply) {
  // The payload is built apart and copied behind the header: appending it to
  // a header-sized vector trips GCC 12's -Warray-bounds (a false positive).
  sandpool_result_header header = {SANDPOOL_RESULT_MAGIC, SANDPOOL_STATUS_OK, 0, 0};
  std::vector<uint8_t> payload;
  if (reply) {
    encodeValue(reply.value(), payload);
  } else {
    header.status = SANDPOOL_STATUS_ERROR;
    payload.assign(reply.error().message.begin(), reply.error().message.end());
  }
  if (sizeof header + payload.size() > layout_.host_call_size) {
    static constexpr std::string_view kTooLarge = "host reply does not fit the host-call buffer";
    header.status = SANDPOOL_STATUS_ERROR;
    payload.assign(kTooLarge.begin(), kTooLarge.end());
  }
  header.size = static_cast<uint32_t>(payload.size());
  std::vector<uint8_t> message(sizeof header + payload.size());
  std::memcpy(message.data(), &header, sizeof header);
  std::copy(payload.begin(), payload.end(), message.begin() + sizeof header);
  // The buffer was validated when the call was read; a failure here is a host bug.
  if (auto written = guest_.write(layout_.host_call_addr, message, "host reply"); !written) {
    error_ = written.takeError();
  }
}

PortAction GuestSession::reportAbort(uint32_t code) {
  const uint64_t address = vcpu_.readRegister(Register::kRsi);
  const uint64_t size = std::min(vcpu_.readRegister(Register::kRdi), kMaxAbortMessage);
  auto text = guest_.read(address, size, "abort message");
  if (!text) {
    return stopWith(makeError(ErrorKind::kGuestFault, "guest aborted (code " + std::to_string(code) +
                                                          ") with an unreadable message: " + text.error().message));
  }
  const std::string message(text->begin(), text->end());
  switch (code) {
    case SANDPOOL_ABORT_OUT_OF_MEMORY:
      return stopWith(makeError(ErrorKind::kOutOfMemory, "guest ran out of memory: " + message));
    case SANDPOOL_ABORT_BAD_REQUEST:
      return stopWith(makeError(ErrorKind::kInternal, "guest refused the call request: " + message));
    default:
      return stopWith(makeError(ErrorKind::kGuestAbort, "guest aborted: " + message));
  }
}

PortAction GuestSession::reportFault(uint32_t vector) {
  FaultInfo fault;
  fault.vector = vector;
  fault.error_code = vcpu_.readRegister(Register::kRsi);
  fault.address = vcpu_.readRegister(Register::kRdi);
  fault.rip = vcpu_.readRegister(Register::kR8);
  Error error = makeError(ErrorKind::kGuestFault, "guest fault: " + describeFault(fault));
  error.fault = fault;
  return stopWith(std::move(error));
}

std::optional<Error> GuestSession::failure(const RunExit& exit, std::chrono::nanoseconds timeout) const {
  if (exit.kind == RunExit::Kind::kTimeout) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count();
    return makeError(ErrorKind::kTimeout, std::string(phase_ == Phase::kBoot ? "guest initialisation" : "call") +
                                              " exceeded its " + std::to_string(ms) + " ms timeout and was stopped");
  }
  if (error_) return error_;
  if (exit.kind == RunExit::Kind::kFault) {
    Error error = makeError(ErrorKind::kGuestFault, "guest fault: " + exit.reason);
    error.fault = exit.fault;
    return error;
  }
  if (!finished_) return makeError(ErrorKind::kGuestFault, "guest stopped without signalling completion");
  return std::nullopt;
}

}  // namespace sandpool::vm
