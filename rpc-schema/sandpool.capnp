# sandpool RPC protocol: how clients talk to sandpoold.
#
# Versioning: `protocolVersion` below is bumped whenever a change is not
# backwards compatible on the wire. Compatible changes (new methods, new
# fields, new enumerants, new union members) only ever append, with the next
# ordinal, so that older clients and servers keep working; `Sandpool.version`
# tells a client which protocol the server speaks.
#
# Security model: the bootstrap capability (`Sandpool`) can do nothing but
# ping, report its version and log in. `login` trades a tenant's token for a
# `Tenant` capability; every method of `Tenant` acts on that tenant only, so
# nothing after login takes a tenant name and one tenant can never name
# another's guests.
#
# Errors: anything a client can act on comes back as a typed `Error` inside
# the results (the `result` unions), never as an exception. RPC exceptions are
# reserved for transport-level failures (disconnects, messages larger than
# the server's limit) and bugs. Error messages never contain host paths,
# addresses or stack traces.

@0xc81c523f0ff5b185;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("sandpool::rpc");

const protocolVersion :UInt32 = 1;

interface Sandpool {
  # The bootstrap interface: what an unauthenticated peer may do.

  ping @0 () -> ();
  # Does nothing: the floor of a round trip, for benchmarks and health checks.

  version @1 () -> (protocol :UInt32, server :Text);
  # `protocol` is `protocolVersion` as the server was built with; `server` is
  # the server's release, e.g. "sandpoold 0.1.0".

  login @2 (token :Text) -> (result :LoginResult);
  # Trades a tenant's token for its capability. An unknown token gives
  # `error.code == unauthenticated` and says nothing about which tenants exist.
}

struct LoginResult {
  union {
    tenant @0 :Tenant;
    error @1 :Error;
  }
}

interface Tenant {
  # Everything one tenant may do. Obtained from `Sandpool.login` only.

  info @0 () -> (name :Text, quota :Quota);
  # Who this capability acts for and what it may use.

  upload @1 (name :Text, elf :Data, replace :Bool, vmSettings :VmSettings)
      -> (result :UploadResult);
  # Validates `elf` (a guest ELF built with the sandpool guest SDK), boots it
  # once, snapshots it and stores it under `name` (1-64 characters of
  # [A-Za-z0-9._-], not starting with '.'). Nothing runs from a file that was
  # not accepted. An existing guest of that name is replaced only if
  # `replace` is true (calls in flight finish on the old version). The upload
  # is on disk (durably), and its warm VMs are ready, before the result is
  # sent.
  # `vmSettings` (optional): the guest's VMs (memory, stack, buffers, host
  # calls per call). A field left 0, or the struct left unset, takes the
  # replaced version's setting, or for a new guest the server's default.

  list @2 () -> (guests :List(GuestInfo));
  # This tenant's guests, sorted by name.

  remove @3 (name :Text) -> (error :Error);
  # Deletes a guest and its warm VMs. `error` is absent (not set) on success.

  call @4 (guest :Text, function :Text, args :List(Value),
           hostFunctions :HostFunctions, timeoutMs :UInt32) -> (result :CallResult);
  # Runs `function` of `guest` in a warm VM with `args` (count and types must
  # match the export) and resets the VM afterwards.
  # `hostFunctions` (optional): when the guest calls a host function the
  # server does not provide itself, the server forwards it to this
  # capability and resumes the guest with the reply; an exception or an
  # `error` from it reaches the guest as a failed host call. The call's
  # timeout covers the time spent waiting for such replies.
  # `timeoutMs` (0 = the server's default) may only shorten the server's
  # call timeout.

  stats @5 () -> (stats :TenantStats);
  # A consistent-enough snapshot of counters; each field is read atomically.

  configure @6 (guest :Text, settings :PoolSettings, vmSettings :VmSettings)
      -> (result :ConfigureResult);
  # Changes a guest's pool: warm VMs kept ready and the most VMs it may use,
  # within the tenant's quota. Takes effect for the next calls; stored with
  # the guest before the result is sent, so it survives a restart.
  # `settings` left unset keeps the pool settings. `vmSettings` (optional;
  # a field left 0 keeps its value) changes the guest's VMs: the stored
  # guest boots again with them into a new version, which takes the next
  # calls once its warm VMs are up, before the result is sent; calls in
  # flight finish on the old version, whose VMs are then dropped.

  guest @7 (name :Text) -> (result :GuestResult);
  # A capability for one guest of this tenant: it can call that guest and
  # describe it, nothing else. Hand it to a service that should run this
  # guest's functions and no other, instead of the tenant capability.
}

interface Guest {
  # One guest of one tenant, obtained from `Tenant.guest`. It follows the
  # name: after an upload with `replace` it calls the new version; after
  # `remove` its calls fail with `unknownGuest`.

  call @0 (function :Text, args :List(Value), hostFunctions :HostFunctions,
           timeoutMs :UInt32) -> (result :CallResult);
  # As `Tenant.call`, for this guest.

  info @1 () -> (result :GuestInfoResult);
}

struct GuestResult {
  union {
    guest @0 :Guest;
    error @1 :Error;
  }
}

struct GuestInfoResult {
  union {
    info @0 :GuestInfo;
    error @1 :Error;
  }
}

interface HostFunctions {
  # Implemented by a client that lends its guest host functions for one call.

  call @0 (name :Text, args :List(Value)) -> (result :HostResult);
  # One host call from the guest: `name` and `args` are what the guest
  # passed (at most a few hundred KiB, see docs/rpc.md).
}

struct HostResult {
  union {
    value @0 :Value;
    error @1 :Text;
    # Reaches the guest as a failed host call carrying this message.
  }
}

struct Value {
  # One typed value crossing the guest boundary (see docs/guest-abi.md).
  union {
    void @0 :Void;
    i32 @1 :Int32;
    i64 @2 :Int64;
    u32 @3 :UInt32;
    u64 @4 :UInt64;
    f32 @5 :Float32;
    f64 @6 :Float64;
    bool @7 :Bool;
    string @8 :Text;
    bytes @9 :Data;
  }
}

enum ValueType {
  void @0;
  i32 @1;
  i64 @2;
  u32 @3;
  u64 @4;
  f32 @5;
  f64 @6;
  bool @7;
  string @8;
  bytes @9;
}

struct FunctionSignature {
  name @0 :Text;
  params @1 :List(ValueType);
  result @2 :ValueType;
}

struct GuestInfo {
  name @0 :Text;
  sha256 @1 :Text;        # of the stored guest ELF (a Wasm module's: the ELF it became), lowercase hex
  size @2 :UInt64;        # of the stored guest ELF, bytes
  exports @3 :List(FunctionSignature);
  settings @4 :PoolSettings;
  vmSettings @5 :VmSettings;  # as the guest's VMs run: every field set
}

struct UploadResult {
  union {
    guest @0 :GuestInfo;
    error @1 :Error;
  }
}

struct CallResult {
  union {
    ok @0 :CallOk;
    error @1 :CallError;
  }
}

struct CallOk {
  value @0 :Value;
  output @1 :Text;            # what the guest printed, bounded per call
  outputTruncated @2 :Bool;
  timing @3 :Timing;
}

struct CallError {
  error @0 :Error;
  output @1 :Text;            # what the guest printed before it failed
  outputTruncated @2 :Bool;
  timing @3 :Timing;
}

struct Timing {
  queueNs @0 :UInt64;         # waiting for a worker and a VM
  runNs @1 :UInt64;           # in the guest, host calls included
  resetNs @2 :UInt64;         # restoring the VM from its snapshot
  totalNs @3 :UInt64;         # from the server receiving the call to replying
  hostCalls @4 :UInt32;
  pagesRestored @5 :UInt64;
  coldStart @6 :Bool;         # a VM had to be created for this call
}

struct PoolSettings {
  minWarm @0 :UInt32;         # VMs kept booted while the guest is in use
  maxVms @1 :UInt32;          # most VMs of this guest at once
}

struct ConfigureResult {
  union {
    settings @0 :PoolSettings;
    error @1 :Error;
  }
  vmSettings @2 :VmSettings;  # on success: as the guest's VMs now run
}

struct VmSettings {
  # One guest's VMs (docs/rpc.md, "VM settings"). In a request 0 means
  # "unchanged" (for a new guest: the server's default); in an answer every
  # field is set. Sizes are bytes; the server's flags give the defaults and
  # maxima, and a value outside them is refused with `invalidArgument`.
  memoryBytes @0 :UInt64;     # guest memory of each VM, a multiple of 2 MiB
  stackBytes @1 :UInt64;      # a multiple of 4 KiB
  inputBytes @2 :UInt64;      # input buffer (call arguments), a multiple of 4 KiB
  outputBytes @3 :UInt64;     # output buffer (results, export table), a multiple of 4 KiB
  maxHostCalls @4 :UInt32;    # host calls one call may make
}

struct Quota {
  maxVms @0 :UInt32;              # VMs of all guests together
  maxGuests @1 :UInt32;
  maxMemoryBytes @2 :UInt64;      # guest memory of all VMs together
  maxConcurrentCalls @3 :UInt32;  # calls running at once; more wait in the queue
  queueLength @4 :UInt32;         # calls waiting at once; more are refused (overloaded)
}

struct TenantStats {
  guests @0 :List(GuestStats);
  queued @1 :UInt32;              # calls of this tenant waiting for a worker
  running @2 :UInt32;             # calls of this tenant on a worker
  overloaded @3 :UInt64;          # calls refused because the queue was full
}

struct GuestStats {
  name @0 :Text;
  warm @1 :UInt32;            # idle VMs ready for a call
  busy @2 :UInt32;            # VMs running a call
  waiting @3 :UInt32;         # calls on a worker waiting for one of this guest's VMs
  created @4 :UInt64;         # VMs created since the guest was loaded
  reset @5 :UInt64;           # calls after which the VM was reset and reused
  discarded @6 :UInt64;       # VMs dropped: failed reset or scaled down
  failed @7 :UInt64;          # calls that ended in an error
  timeouts @8 :UInt64;        # calls stopped at their deadline
  calls @9 :UInt64;           # calls completed, failed ones included
  latency @10 :LatencyHistogram;
  snapshotBytes @11 :UInt64;  # the guest's snapshot: resident bytes of its memfd, held once
                              # per guest (every VM maps it copy-on-write)
}

struct LatencyHistogram {
  # Server-side call latency (queue + run + reset). Bucket i counts calls
  # that took less than `boundsUs[i]` microseconds and at least the previous
  # bound; the last bucket counts everything above the last bound.
  boundsUs @0 :List(UInt64);
  counts @1 :List(UInt64);
  p50Us @2 :UInt64;           # upper bound of the bucket holding the median
  p99Us @3 :UInt64;
}

enum ErrorCode {
  internal @0;           # a server-side failure; details are in the server's log
  unauthenticated @1;    # unknown token
  invalidArgument @2;    # a malformed request (bad guest name, ...)
  invalidGuest @3;       # the uploaded ELF was refused, or it failed to boot
  tooLarge @4;           # the upload is larger than the server accepts
  guestExists @5;        # upload without `replace` of an existing name
  unknownGuest @6;       # this tenant has no guest of that name
  unknownFunction @7;    # the guest exports no function of that name
  badArguments @8;       # argument count or types do not match the export
  guestAbort @9;         # the guest aborted or its function returned an error
  guestFault @10;        # CPU exception, forbidden access or bad port in the guest
  timeout @11;           # the call ran past its deadline and was stopped
  badHostCall @12;       # a malformed or refused host call
  outOfMemory @13;       # the guest ran out of memory
  limitExceeded @14;     # a per-call limit (buffers, host calls) was hit
  overloaded @15;        # the tenant's queue is full: retry later
  quotaExceeded @16;     # the tenant's quota forbids it (guests, VMs, memory)
  shuttingDown @17;      # the server is stopping
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;      # for people: names the step and the values
}
