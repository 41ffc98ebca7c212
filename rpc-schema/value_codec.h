// Values between the wire (sandpool.capnp's Value and ValueType) and the
// C++ value model (vm/value.h), for the server and the C++ client alike.
// The schema's ValueType enumerants carry the ABI's tags
// (guest/include/sandpool/abi.h), so types convert by number.
#pragma once

#include "rpc-schema/sandpool.capnp.h"
#include "vm/value.h"

namespace sandpool::rpc {

// A union member this build does not know (from a newer peer) comes back as
// void, which then fails a signature check with a typed error.
vm::Value fromRpc(Value::Reader value);
void toRpc(const vm::Value& value, Value::Builder out);

vm::ValueType fromRpc(ValueType type);
ValueType toRpc(vm::ValueType type);

}  // namespace sandpool::rpc
