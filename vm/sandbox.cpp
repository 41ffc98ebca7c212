#include "vm/sandbox.h"

#include <sys/mman.h>

#include <array>
#include <optional>

#include <fmt/format.h>

#include "vm/entropy.h"
#include "vm/guest_protocol.h"
#include "vm/guest_session.h"
#include "vm/guest_view.h"
#include "vm/host_limits.h"

namespace sandpool::vm {

namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

void CallRequest::startTimeout(std::chrono::nanoseconds given) {
  timeout = given;
  deadline = Clock::now() + given;
}

Sandbox::Sandbox(Watchdog& watchdog, std::shared_ptr<const Snapshot> snapshot, GuestMemory memory)
    : watchdog_(watchdog), snapshot_(std::move(snapshot)), memory_(std::move(memory)) {}

Sandbox::~Sandbox() = default;

Expected<std::unique_ptr<Sandbox>> Sandbox::create(Backend& backend,
                                                   std::shared_ptr<const Snapshot> snapshot) {
  if (backend.kind() != snapshot->backendKind()) {
    return makeError(
        ErrorKind::kInternal,
        fmt::format("snapshot was made by the {} backend, not {}",
                    backendKindName(snapshot->backendKind()), backendKindName(backend.kind())));
  }
  if (auto room = takeRoomForVm(); !room) return room.takeError();
  auto memory = GuestMemory::mapPrivate(snapshot->memfd(), snapshot->config().memory_size,
                                        PROT_READ | PROT_WRITE);
  if (!memory) return memory.takeError();
  std::unique_ptr<Sandbox> sandbox(
      new Sandbox(backend.watchdog(), snapshot, std::move(memory.value())));
  auto vcpu = backend.createMicroVm(sandbox->memory_, snapshot->layout(), snapshot->entry());
  if (!vcpu) return vcpu.takeError();
  sandbox->vcpu_ = std::move(vcpu.value());
  if (auto loaded = sandbox->vcpu_->loadCpuState(snapshot->cpu()); !loaded)
    return loaded.takeError();
  if (auto armed = sandbox->vcpu_->armReset(snapshot->contents()); !armed) return armed.takeError();
  return sandbox;
}

CallResult Sandbox::call(const CallRequest& request) {
  CallResult outcome;
  calls_++;
  if (!healthy_) {
    outcome.result =
        makeError(ErrorKind::kResetFailed, "this VM failed a reset and cannot run calls");
    return outcome;
  }
  if (request.deadline == Clock::time_point{}) {
    outcome.result =
        makeError(ErrorKind::kInternal,
                  fmt::format("call request for '{}' has no deadline", request.function));
    return outcome;
  }
  const Snapshot& snap = *snapshot_;
  const MemoryLayout& layout = snap.layout();
  auto index = snap.findExport(request.function);
  if (!index) {
    outcome.result = makeError(ErrorKind::kUnknownFunction,
                               fmt::format("guest exports no function '{}'", request.function));
    return outcome;
  }
  const FunctionSignature& sig = snap.exports()[*index];
  if (auto checked = checkArguments(sig, request.args); !checked) {
    outcome.result = checked.takeError();
    return outcome;
  }

  std::array<uint8_t, kEntropyBytes> entropy;
  if (auto filled = fillEntropy(entropy); !filled) {
    outcome.result = filled.takeError();
    return outcome;
  }
  if (auto encoded =
          encodeCallRequest(*index, request.args, entropy, layout.input_size, request_message_);
      !encoded) {
    outcome.result = encoded.takeError();
    return outcome;
  }

  const auto started = Clock::now();
  GuestView guest(memory_, layout);
  GuestSession session(GuestSession::Phase::kCall, memory_, layout, snap.config(), *vcpu_,
                       request.host_functions);
  if (auto written = guest.write(layout.input_addr, request_message_, "call request"); !written) {
    outcome.result = written.takeError();
  } else {
    RunExit exit;
    vcpu_->clearInterrupt();
    std::optional<Error> failed;
    if (auto guard = watchdog_.watch(*vcpu_, request.deadline, request.cancelled); !guard) {
      failed = guard.takeError();
    } else {
      exit = vcpu_->run(session);
    }
    if (!failed) failed = session.failure(exit, request.timeout);
    if (failed && failed->kind == ErrorKind::kTimeout && request.cancelled != nullptr &&
        request.cancelled->load()) {
      // Stopped as at a deadline, but because the caller went away.
      failed = makeError(ErrorKind::kTimeout, "the caller cancelled the call; it was stopped");
    }
    if (failed) {
      outcome.result = std::move(*failed);
    } else {
      auto output = guest.read(layout.output_addr, layout.output_size, "output buffer");
      outcome.result = output ? decodeResult(*output, sig) : Expected<Value>(output.takeError());
    }
  }
  const auto ran = Clock::now();
  outcome.output = std::move(session.output());
  outcome.output_truncated = session.outputTruncated();
  outcome.stats.host_calls = session.hostCalls();
  outcome.stats.run_time = ran - started;

  auto reset = vcpu_->reset();
  outcome.stats.reset_time = Clock::now() - ran;
  if (reset) {
    outcome.stats.pages_restored = reset->pages_restored;
  } else {
    healthy_ = false;
  }
  return outcome;
}

}  // namespace sandpool::vm
