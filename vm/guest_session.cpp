#include "vm/guest_session.h"

#include <sandpool/abi.h>

#include <algorithm>
#include <chrono>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "vm/guest_protocol.h"

namespace sandpool::vm {

namespace {

constexpr uint64_t kMaxAbortMessage = 1024;

// The monotonic clock guests read counts from here, so that it does not
// tell them the host's uptime.
const std::chrono::steady_clock::time_point kMonotonicOrigin = std::chrono::steady_clock::now();

Expected<Value> readHostClock(const std::vector<Value>& args) {
  if (args.size() != 1 || typeOf(args[0]) != ValueType::kU32) {
    return makeError(ErrorKind::kBadHostCall, "clock takes one u32 (0 realtime, 1 monotonic)");
  }
  switch (std::get<uint32_t>(args[0])) {
    case SANDPOOL_CLOCK_REALTIME:
      return Value(uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count()));
    case SANDPOOL_CLOCK_MONOTONIC:
      return Value(uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::steady_clock::now() - kMonotonicOrigin)
                                .count()));
    default:
      return makeError(ErrorKind::kBadHostCall,
                       fmt::format("unknown clock {}", std::get<uint32_t>(args[0])));
  }
}

}  // namespace

GuestSession::GuestSession(Phase phase, GuestMemory& memory, const MemoryLayout& layout,
                           const VmConfig& config, MicroVm& vcpu, HostFunctions* host_functions)
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
      {
        // READY names the address after its `out` in rsi (abi.h): the
        // snapshot resumes there.
        auto resume_at = vcpu_.readRegister(Register::kRsi);
        if (!resume_at) return stopWith(resume_at.takeError());
        auto state = vcpu_.saveCpuState(*resume_at);
        if (!state) return stopWith(state.takeError());
        ready_state_ = std::move(*state);
      }
      finished_ = true;
      export_table_size_ = value;
      return PortAction::kStop;
    case SANDPOOL_PORT_DONE:
      if (phase_ != Phase::kCall) {
        return stopWith(makeError(ErrorKind::kGuestFault, "guest signalled DONE before READY"));
      }
      // The result's size (`value`) is the result header's to say.
      finished_ = true;
      return PortAction::kStop;
    case SANDPOOL_PORT_HOST_CALL: return serveHostCall();
    case SANDPOOL_PORT_ABORT: return reportAbort(value);
    case SANDPOOL_PORT_FAULT: return reportFault(value);
    default: {
      auto rip = vcpu_.readRegister(Register::kRip);
      if (!rip) return stopWith(rip.takeError());
      return stopWith(makeError(
          ErrorKind::kGuestFault,
          fmt::format("guest wrote to unknown I/O port {} (rip {})", toHex(port), toHex(*rip))));
    }
  }
}

PortAction GuestSession::serveHostCall() {
  if (++host_calls_ > config_.max_host_calls) {
    return stopWith(makeError(
        ErrorKind::kLimitExceeded,
        fmt::format("guest made more than {} host calls in one call", config_.max_host_calls)));
  }
  auto area = guest_.read(layout_.host_call_addr, layout_.host_call_size, "host-call buffer");
  if (!area) return stopWith(area.takeError());
  auto call = decodeHostCall(*area);
  if (!call) return stopWith(call.takeError());
  const std::string& name = call->name;
  const std::vector<Value>& args = call->args;

  if (name == SANDPOOL_HOST_PRINT) {
    if (args.size() != 1 || typeOf(args[0]) != ValueType::kString) {
      replyToGuest(makeError(ErrorKind::kBadHostCall, "print takes one string"));
      return PortAction::kResume;
    }
    const std::string& text = std::get<std::string>(args[0]);
    const uint64_t room =
        config_.max_output_bytes - std::min<uint64_t>(output_.size(), config_.max_output_bytes);
    if (text.size() > room) output_truncated_ = true;
    output_.append(text, 0, std::min<uint64_t>(room, text.size()));
    replyToGuest(Value(Void{}));
  } else if (name == SANDPOOL_HOST_CLOCK) {
    replyToGuest(readHostClock(args));
  } else if (host_functions_) {
    auto reply = host_functions_->callHostFunction(name, args);
    // The call's deadline passed while the host function was pending: the
    // call ends as a timeout, as it would have had the guest been running.
    if (!reply && reply.error().kind == ErrorKind::kTimeout) return stopWith(reply.takeError());
    replyToGuest(reply);
  } else {
    replyToGuest(
        makeError(ErrorKind::kBadHostCall, fmt::format("unknown host function '{}'", name)));
  }
  return PortAction::kResume;
}

void GuestSession::replyToGuest(const Expected<Value>& reply) {
  const std::vector<uint8_t> message = encodeHostReply(reply, layout_.host_call_size);
  // The buffer was validated when the call was read; a failure here is a host bug.
  if (auto written = guest_.write(layout_.host_call_addr, message, "host reply"); !written) {
    error_ = written.takeError();
  }
}

PortAction GuestSession::reportAbort(uint32_t code) {
  auto address = vcpu_.readRegister(Register::kRsi);
  if (!address) return stopWith(address.takeError());
  auto length = vcpu_.readRegister(Register::kRdi);
  if (!length) return stopWith(length.takeError());
  auto text = guest_.read(*address, std::min(*length, kMaxAbortMessage), "abort message");
  if (!text) {
    return stopWith(makeError(ErrorKind::kGuestFault,
                              fmt::format("guest aborted (code {}) with an unreadable message: {}",
                                          code, text.error().message)));
  }
  return stopWith(abortError(
      code, std::string_view(reinterpret_cast<const char*>(text->data()), text->size())));
}

PortAction GuestSession::reportFault(uint32_t vector) {
  FaultInfo fault;
  fault.vector = vector;
  for (auto [reg, field] :
       {std::pair{Register::kRsi, &fault.error_code}, std::pair{Register::kRdi, &fault.address},
        std::pair{Register::kR8, &fault.rip}}) {
    auto value = vcpu_.readRegister(reg);
    if (!value) return stopWith(value.takeError());
    *field = *value;
  }
  Error error =
      makeError(ErrorKind::kGuestFault, fmt::format("guest fault: {}", describeFault(fault)));
  error.fault = fault;
  return stopWith(std::move(error));
}

std::optional<Error> GuestSession::failure(const RunExit& exit,
                                           std::chrono::nanoseconds timeout) const {
  if (exit.kind == RunExit::Kind::kTimeout) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count();
    return makeError(ErrorKind::kTimeout,
                     fmt::format("{} exceeded its {} ms timeout and was stopped",
                                 phase_ == Phase::kBoot ? "guest initialisation" : "call", ms));
  }
  if (error_) return error_;
  if (exit.kind == RunExit::Kind::kHostFailure) return makeError(ErrorKind::kInternal, exit.reason);
  if (exit.kind == RunExit::Kind::kFault) {
    Error error = makeError(ErrorKind::kGuestFault, fmt::format("guest fault: {}", exit.reason));
    error.fault = exit.fault;
    return error;
  }
  if (!finished_)
    return makeError(ErrorKind::kGuestFault, "guest stopped without signalling completion");
  return std::nullopt;
}

}  // namespace sandpool::vm
