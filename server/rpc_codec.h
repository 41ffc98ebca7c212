// Conversions between the wire types (rpc-schema/sandpool.capnp) and the
// vm/ and pool/ types, and the mapping of internal errors to typed RPC
// errors. Everything here runs on the KJ thread.
#pragma once

#include <string>
#include <vector>

#include "pool/call_task.h"
#include "pool/guest_pool.h"
#include "rpc-schema/sandpool.capnp.h"
#include "vm/error.h"
#include "vm/value.h"

namespace sandpool::server {

// Text helpers: capnp text to std::string and back without a copy.
inline std::string str(capnp::Text::Reader text) { return std::string(text.begin(), text.end()); }
inline kj::StringPtr ptr(const std::string& s) { return kj::StringPtr(s.c_str(), s.size()); }

vm::Value fromRpc(rpc::Value::Reader value);
void toRpc(const vm::Value& value, rpc::Value::Builder out);
rpc::ValueType toRpc(vm::ValueType type);
void toRpc(const vm::FunctionSignature& sig, rpc::FunctionSignature::Builder out);

rpc::ErrorCode errorCode(vm::ErrorKind kind);
rpc::ErrorCode errorCode(pool::RefusalKind kind);
// Fills `out` from a vm error. Internal errors may carry host details (paths,
// syscalls): those are logged by the caller and replaced here.
void toRpc(const vm::Error& error, rpc::Error::Builder out);
// Every error message a client gets is set here: escaped and cut at
// text::kMaxUntrustedBytes (common/untrusted_text.h), whatever it quotes.
void setError(rpc::Error::Builder out, rpc::ErrorCode code, kj::StringPtr message);

}  // namespace sandpool::server
