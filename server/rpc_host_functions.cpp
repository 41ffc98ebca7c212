#include "server/rpc_host_functions.h"

#include <memory>
#include <optional>
#include <semaphore>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "server/rpc_codec.h"

namespace sandpool::server {

// One host call forwarded from a worker to the client's capability. Shared
// by the waiting worker and the KJ-thread continuation, either of which may
// finish last (the worker gives up at the call's deadline).
struct HostCallState {
  std::string name;
  std::vector<vm::Value> args;
  std::binary_semaphore done{0};
  std::optional<vm::Expected<vm::Value>> result;  // written before done.release()
  // KJ thread only: cancels the forwarded call once the worker gave up on it,
  // so the client is told (capnp Finish) instead of being waited on forever.
  kj::Canceler canceler;
};

namespace {

// What the guest learns of an exception its caller's host function threw:
// the exception's own message, not the client's traceback (file paths,
// source lines), bounded. Cap'n Proto prefixes "remote exception: "; a
// Python client (pycapnp) sends "Traceback (most recent call last): ..."
// whose last line is the exception and its message.
std::string clientExceptionMessage(std::string_view description) {
  constexpr std::string_view kRemote = "remote exception: ";
  constexpr size_t kMaxBytes = 200;
  if (description.substr(0, kRemote.size()) == kRemote) description.remove_prefix(kRemote.size());
  std::string_view message = description.substr(0, description.find('\n'));
  if (description.find("Traceback (most recent call last)") != std::string_view::npos) {
    std::string_view rest = description;
    while (!rest.empty() && (rest.back() == '\n' || rest.back() == ' ')) rest.remove_suffix(1);
    message = rest.substr(rest.rfind('\n') == std::string_view::npos ? 0 : rest.rfind('\n') + 1);
  }
  return std::string(message.substr(0, kMaxBytes));
}

class HostCallMessage final : public KjMailbox::Message {
 public:
  HostCallMessage(RpcHostFunctions& functions, std::shared_ptr<HostCallState> state)
      : functions_(functions), state_(std::move(state)) {}
  // The functions are still alive: they live as long as their call's task,
  // whose completion is posted after this message by the same worker, and
  // the mailbox keeps their order.
  void deliver() override { functions_.startHostCall(std::move(state_)); }

 private:
  RpcHostFunctions& functions_;
  std::shared_ptr<HostCallState> state_;
};

class CancelHostCallMessage final : public KjMailbox::Message {
 public:
  explicit CancelHostCallMessage(std::shared_ptr<HostCallState> state) : state_(std::move(state)) {}
  // Posted after the HostCallMessage of the same state, so the call has been
  // started (or was never forwarded) by the time this runs.
  void deliver() override { state_->canceler.cancel("the call's deadline passed"); }

 private:
  std::shared_ptr<HostCallState> state_;
};

}  // namespace

vm::Expected<vm::Value> RpcHostFunctions::callHostFunction(std::string_view name,
                                                           std::span<const vm::Value> args) {
  auto state = std::make_shared<HostCallState>();
  state->name = std::string(name);
  state->args.assign(args.begin(), args.end());
  mailbox_.post(new HostCallMessage(*this, state));
  if (!state->done.try_acquire_until(deadline_)) {
    mailbox_.post(new CancelHostCallMessage(state));
    return vm::makeError(
        vm::ErrorKind::kTimeout,
        fmt::format("host function '{}' gave no reply before the call's deadline", state->name));
  }
  return std::move(*state->result);
}

void RpcHostFunctions::startHostCall(std::shared_ptr<HostCallState> state) {
  auto request = client_.callRequest();
  request.setName(ptr(state->name));
  auto args = request.initArgs(static_cast<unsigned>(state->args.size()));
  for (size_t i = 0; i < state->args.size(); ++i)
    toRpc(state->args[i], args[static_cast<unsigned>(i)]);
  // Only the request is wrapped: the handlers that hold `state` must
  // outlive the canceler's link to it, or dropping the last reference from
  // inside the wrapped promise would destroy the canceler under it.
  background_.add(
      state->canceler.wrap(request.send())
          .then(
              [state](capnp::Response<rpc::HostFunctions::CallResults>&& response) {
                auto result = response.getResult();
                if (result.isValue()) {
                  state->result = vm::Expected<vm::Value>(fromRpc(result.getValue()));
                } else {
                  state->result = vm::Expected<vm::Value>(
                      vm::makeError(vm::ErrorKind::kBadHostCall,
                                    fmt::format("host function '{}' failed: {}", state->name,
                                                str(result.getError()))));
                }
                state->done.release();
              },
              [state](kj::Exception&& e) {
                state->result = vm::Expected<vm::Value>(vm::makeError(
                    vm::ErrorKind::kBadHostCall,
                    fmt::format("host function '{}' failed in the client: {}", state->name,
                                clientExceptionMessage(e.getDescription().cStr()))));
                state->done.release();
              }));
}

}  // namespace sandpool::server
