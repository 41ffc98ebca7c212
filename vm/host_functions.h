// Host functions a guest can call beyond the built-in ones (print). The
// server implements this to forward calls to a client's capability.
#pragma once

#include <span>
#include <string_view>

#include "vm/error.h"
#include "vm/value.h"

namespace sandpool::vm {

class HostFunctions {
 public:
  virtual ~HostFunctions() = default;
  // Called on the thread running the VM, which blocks until it returns.
  // An Error reaches the guest as a failed host call (status ERROR + message);
  // the guest decides what to do with it. The exception is an Error of kind
  // kTimeout, meaning the call's deadline passed while waiting: the call then
  // ends with that timeout error at once.
  virtual Expected<Value> callHostFunction(std::string_view name, std::span<const Value> args) = 0;
};

}  // namespace sandpool::vm
