// One run of a guest, boot or call: answers the guest's port writes (host
// calls, abort and fault reports, READY, DONE) and turns whatever ended the
// run into a typed Error. Shared by both backends and by boot and call.
//
// Thread: lives on the stack of the thread running the vCPU.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "vm/backend.h"
#include "vm/config.h"
#include "vm/guest_memory.h"
#include "vm/guest_view.h"
#include "vm/host_functions.h"
#include "vm/layout.h"

namespace sandpool::vm {

class GuestSession final : public PortHandler {
 public:
  enum class Phase { kBoot, kCall };

  GuestSession(Phase phase, GuestMemory& memory, const MemoryLayout& layout, const VmConfig& config,
               MicroVm& vcpu, HostFunctions* host_functions);

  PortAction onPortOut(uint16_t port, uint32_t value) override;

  // After run(): the error that ended the run, if any. `exit` is what run()
  // returned; `timeout` is the deadline that applied, for the message.
  std::optional<Error> failure(const RunExit& exit, std::chrono::nanoseconds timeout) const;

  // The size of the export table the guest named at READY (boot only).
  uint32_t exportTableSize() const { return export_table_size_; }
  // The CPU state saved at READY (boot only).
  std::unique_ptr<CpuState> takeReadyState() { return std::move(ready_state_); }

  std::string& output() { return output_; }
  bool outputTruncated() const { return output_truncated_; }
  uint32_t hostCalls() const { return host_calls_; }

 private:
  PortAction stopWith(Error error);
  PortAction serveHostCall();
  PortAction reportAbort(uint32_t code);
  PortAction reportFault(uint32_t vector);
  void replyToGuest(const Expected<Value>& reply);

  Phase phase_;
  GuestView guest_;
  const MemoryLayout& layout_;
  const VmConfig& config_;
  MicroVm& vcpu_;
  HostFunctions* host_functions_;

  bool finished_ = false;
  uint32_t export_table_size_ = 0;
  std::optional<Error> error_;
  std::unique_ptr<CpuState> ready_state_;
  std::string output_;
  bool output_truncated_ = false;
  uint32_t host_calls_ = 0;
};

}  // namespace sandpool::vm
