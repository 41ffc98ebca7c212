// No more privilege than sandpoold needs (docs/security.md, "Privileges"):
// it refuses to run as root unless told to, or drops to a configured user
// once its sockets, /dev/kvm and the data directory are open; it keeps no
// core dumps (they would hold tenants' data) and sets no_new_privs; what it
// creates is for its own user only (umask 077, data directory 0700).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>

#include "vm/error.h"

namespace sandpool::server {

struct RunAs {
  std::string user;
  uid_t uid = 0;
  gid_t gid = 0;
};

// The user to drop to (--user), or none to stay as started. Refuses root
// without --user unless `allow_root`, and a --user that does not exist or
// is root.
vm::Expected<std::optional<RunAs>> resolveRunAs(const std::string& user, bool allow_root);

// At start-up, before any file or thread: umask 077, no_new_privs, and,
// unless `allow_core_dumps`, no core dumps (RLIMIT_CORE 0, not dumpable,
// which also keeps other processes of the same user from tracing it).
vm::Expected<void> restrictProcessPrivileges(bool allow_core_dumps);

// Creates the data directory (and its guests/) 0700 and, when dropping to
// another user, hands the tree to that user.
vm::Expected<void> prepareDataDirectory(const std::filesystem::path& dir,
                                        const std::optional<RunAs>& run_as);

// Drops to `run_as` for good (supplementary groups, gid, uid) and checks
// that root cannot be regained. Every thread follows (glibc's set-id
// broadcast). The process stays not dumpable unless `allow_core_dumps`.
vm::Expected<void> dropPrivileges(const RunAs& run_as, bool allow_core_dumps);

}  // namespace sandpool::server
