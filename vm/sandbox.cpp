#include "vm/sandbox.h"

#include <sys/mman.h>

#include <sandpool/abi.h>

#include <cstring>

#include "vm/entropy.h"
#include "vm/guest_session.h"
#include "vm/guest_view.h"
#include "vm/watchdog.h"

namespace sandpool::vm {

namespace {

using Clock = std::chrono::steady_clock;

std::string describeArgs(const std::vector<Value>& args) {
  std::string text = "(";
  for (size_t i = 0; i < args.size(); i++) {
    if (i) text += ", ";
    text += valueTypeName(typeOf(args[i]));
  }
  return text + ")";
}

Expected<void> checkArguments(const FunctionSignature& sig, const std::vector<Value>& args) {
  bool match = args.size() == sig.params.size();
  for (size_t i = 0; match && i < args.size(); i++) match = typeOf(args[i]) == sig.params[i];
  if (!match) {
    return makeError(ErrorKind::kBadArguments,
                     "'" + sig.name + "' expects " + sig.describe() + ", got " + describeArgs(args));
  }
  return {};
}

// The result the guest left in the output buffer, checked against the export.
Expected<Value> readResult(const GuestView& guest, const FunctionSignature& sig) {
  const MemoryLayout& layout = guest.layout();
  auto area = guest.read(layout.output_addr, layout.output_size, "output buffer");
  if (!area) return area.takeError();
  sandpool_result_header header;
  std::memcpy(&header, area->data(), sizeof header);
  if (header.magic != SANDPOOL_RESULT_MAGIC || header.size > area->size() - sizeof header) {
    return makeError(ErrorKind::kGuestFault, "guest left a malformed result header (size " +
                                                 std::to_string(header.size) + ")");
  }
  std::span<const uint8_t> payload = area->subspan(sizeof header, header.size);
  if (header.status == SANDPOOL_STATUS_ERROR) {
    return makeError(ErrorKind::kGuestAbort,
                     "guest function '" + sig.name + "' failed: " + std::string(payload.begin(), payload.end()));
  }
  auto value = decodeValue(payload);
  if (!value) return makeError(ErrorKind::kGuestFault, "guest result: " + value.error().message);
  if (typeOf(*value) != sig.result) {
    return makeError(ErrorKind::kGuestFault, "guest returned " + std::string(valueTypeName(typeOf(*value))) +
                                                 " from '" + sig.name + "', declared " +
                                                 std::string(valueTypeName(sig.result)));
  }
  return value;
}

}  // namespace

Sandbox::Sandbox(std::shared_ptr<const Snapshot> snapshot, GuestMemory memory)
    : snapshot_(std::move(snapshot)), memory_(std::move(memory)) {}

Sandbox::~Sandbox() = default;

Expected<std::unique_ptr<Sandbox>> Sandbox::create(Backend& backend, std::shared_ptr<const Snapshot> snapshot) {
  if (backend.kind() != snapshot->backendKind()) {
    return makeError(ErrorKind::kInternal, "snapshot was made by the " +
                                               std::string(backendKindName(snapshot->backendKind())) +
                                               " backend, not " + std::string(backendKindName(backend.kind())));
  }
  auto memory = GuestMemory::mapPrivate(snapshot->memfd(), snapshot->config().memory_size, PROT_READ | PROT_WRITE);
  if (!memory) return memory.takeError();
  std::unique_ptr<Sandbox> sandbox(new Sandbox(snapshot, std::move(memory.value())));
  auto vcpu = backend.createVcpu(sandbox->memory_, snapshot->layout(), snapshot->entry());
  if (!vcpu) return vcpu.takeError();
  sandbox->vcpu_ = std::move(vcpu.value());
  if (auto loaded = sandbox->vcpu_->loadCpuState(snapshot->cpu()); !loaded) return loaded.takeError();
  if (auto armed = sandbox->vcpu_->armReset(snapshot->contents()); !armed) return armed.takeError();
  return sandbox;
}

CallResult Sandbox::call(const CallRequest& request) {
  CallResult outcome;
  calls_++;
  if (!healthy_) {
    outcome.result = makeError(ErrorKind::kResetFailed, "this VM failed a reset and cannot run calls");
    return outcome;
  }
  const Snapshot& snap = *snapshot_;
  const MemoryLayout& layout = snap.layout();
  auto index = snap.findExport(request.function);
  if (!index) {
    outcome.result = makeError(ErrorKind::kUnknownFunction, "guest exports no function '" + request.function + "'");
    return outcome;
  }
  const FunctionSignature& sig = snap.exports()[*index];
  if (auto checked = checkArguments(sig, request.args); !checked) {
    outcome.result = checked.takeError();
    return outcome;
  }

  std::vector<uint8_t> message(sizeof(sandpool_call_header));
  for (const Value& arg : request.args) encodeValue(arg, message);
  if (message.size() > layout.input_size) {
    outcome.result = makeError(ErrorKind::kLimitExceeded, "arguments take " + std::to_string(message.size()) +
                                                              " bytes; the input buffer holds " +
                                                              std::to_string(layout.input_size));
    return outcome;
  }
  sandpool_call_header header{};
  header.magic = SANDPOOL_CALL_MAGIC;
  header.function_index = *index;
  header.arg_count = static_cast<uint32_t>(request.args.size());
  header.args_size = static_cast<uint32_t>(message.size() - sizeof header);
  fillEntropy(header.entropy);
  std::memcpy(message.data(), &header, sizeof header);

  const auto started = Clock::now();
  GuestView guest(memory_, layout);
  GuestSession session(GuestSession::Phase::kCall, memory_, layout, snap.config(), *vcpu_,
                       request.host_functions);
  if (auto written = guest.write(layout.input_addr, message, "call request"); !written) {
    outcome.result = written.takeError();
  } else {
    RunExit exit;
    vcpu_->clearInterrupt();
    {
      Watchdog::Guard guard(Watchdog::instance(), *vcpu_, request.deadline.value_or(started + request.timeout));
      exit = vcpu_->run(session);
    }
    if (auto failed = session.failure(exit, request.timeout)) {
      outcome.result = std::move(*failed);
    } else {
      outcome.result = readResult(guest, sig);
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
