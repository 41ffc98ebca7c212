// Conversions between the wire types (rpc-schema/sandpool.capnp) and the
// types of the layers below (vm/, pool/, the TenantRegistry's answers), and
// the mapping of their errors to typed RPC errors: every answer a client
// gets is encoded here. Everything here runs on the KJ thread.
#pragma once

#include <string>
#include <vector>

#include "pool/call_task.h"
#include "pool/guest_pool.h"
#include "rpc-schema/sandpool.capnp.h"
#include "rpc-schema/value_codec.h"
#include "server/tenant_registry.h"
#include "server/tenant_state.h"
#include "vm/error.h"
#include "vm/value.h"

namespace sandpool::server {

// Text helpers: capnp text to std::string and back without a copy.
inline std::string str(capnp::Text::Reader text) { return std::string(text.begin(), text.end()); }
inline kj::StringPtr ptr(const std::string& s) { return kj::StringPtr(s.c_str(), s.size()); }

void toRpc(const vm::FunctionSignature& sig, rpc::FunctionSignature::Builder out);

rpc::ErrorCode errorCode(vm::ErrorKind kind);
rpc::ErrorCode errorCode(pool::RefusalKind kind);
// The schema's name of `code` ("unknownFunction"), as metrics label it.
std::string errorCodeName(FailureCode code);
// Fills `out` from a vm error. Internal errors may carry host details (paths,
// syscalls): those are logged by the caller and replaced here.
void toRpc(const vm::Error& error, rpc::Error::Builder out);
// Every error message a client gets is set here: escaped and cut at
// text::kMaxUntrustedBytes (common/untrusted_text.h), whatever it quotes.
void setError(rpc::Error::Builder out, rpc::ErrorCode code, kj::StringPtr message);
void toRpc(const Failure& failure, rpc::Error::Builder out);

void toRpc(const std::string& name, const GuestEntry& guest, rpc::GuestInfo::Builder out);
void toRpc(const pool::PoolSettings& settings, rpc::PoolSettings::Builder out);
// What a guest's VMs run with.
void toRpc(const vm::VmConfig& config, rpc::VmSettings::Builder out);
// A request's VM settings: 0 where a field is not set, all 0 when the
// struct is absent (an older client).
VmSettings fromRpc(rpc::VmSettings::Reader settings);
void toRpc(const pool::Quota& quota, rpc::Quota::Builder out);

// A size hint for a call's reply. Without one capnp starts every reply with
// an 8 KiB segment: a large allocation per call, which sends glibc's malloc
// down its slow path (consolidating the small chunks the call freed).
capnp::MessageSize replySize(const pool::CallOutcome& outcome);
// A call's value or typed error, its output and the server's timing.
// Internal errors and refusals carry no host details (the registry logged
// them).
void toRpc(const FinishedCall& call, rpc::CallResult::Builder out);

// Writes the statistics a TenantRegistry visits into `out`.
class RpcStatsWriter final : public StatsVisitor {
 public:
  explicit RpcStatsWriter(rpc::TenantStats::Builder out) : out_(out) {}
  void tenant(const TenantConfig& config, const pool::TenantCounters& counters,
              size_t guests) override;
  void guest(const std::string& name, const pool::GuestStats& stats) override;

 private:
  rpc::TenantStats::Builder out_;
  kj::Maybe<capnp::List<rpc::GuestStats>::Builder> guests_;
  unsigned next_ = 0;
};

}  // namespace sandpool::server
