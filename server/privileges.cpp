#include "server/privileges.h"

#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace sandpool::server {

namespace fs = std::filesystem;

namespace {

vm::Error failed(const std::string& what) {
  return vm::makeError(vm::ErrorKind::kInternal, fmt::format("{}: {}", what, std::strerror(errno)));
}

}  // namespace

vm::Expected<std::optional<RunAs>> resolveRunAs(const std::string& user, bool allow_root) {
  if (user.empty()) {
    if (::geteuid() == 0 && !allow_root) {
      return vm::makeError(
          vm::ErrorKind::kInternal,
          "sandpoold refuses to run as root: give --user NAME to drop to once the sockets and "
          "/dev/kvm are open, or --allow-root");
    }
    return std::optional<RunAs>();
  }
  if (::geteuid() != 0) {
    return vm::makeError(vm::ErrorKind::kInternal,
                         "--user needs sandpoold started as root (to change user)");
  }
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (::getpwnam_r(user.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 ||
      found == nullptr) {
    return vm::makeError(vm::ErrorKind::kInternal, fmt::format("--user: no user '{}'", user));
  }
  if (found->pw_uid == 0)
    return vm::makeError(vm::ErrorKind::kInternal, fmt::format("--user: '{}' is root", user));
  return std::optional<RunAs>(RunAs{user, found->pw_uid, found->pw_gid});
}

vm::Expected<void> restrictProcessPrivileges(bool allow_core_dumps) {
  ::umask(077);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return failed("no_new_privs");
  if (!allow_core_dumps) {
    const rlimit none{0, 0};
    if (::setrlimit(RLIMIT_CORE, &none) != 0) return failed("RLIMIT_CORE");
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return failed("PR_SET_DUMPABLE");
  }
  return {};
}

vm::Expected<void> prepareDataDirectory(const fs::path& dir, const std::optional<RunAs>& run_as) {
  std::error_code ec;
  fs::create_directories(dir / "guests", ec);
  if (ec)
    return vm::makeError(vm::ErrorKind::kInternal,
                         fmt::format("creating {}: {}", dir.string(), ec.message()));
  for (const fs::path& owned : {dir, dir / "guests"}) {
    if (::chmod(owned.c_str(), 0700) != 0) return failed(fmt::format("chmod {}", owned.string()));
  }
  if (!run_as) return {};
  auto hand_over = [&](const fs::path& path) -> vm::Expected<void> {
    if (::lchown(path.c_str(), run_as->uid, run_as->gid) != 0)
      return failed(fmt::format("chown {}", path.string()));
    return {};
  };
  if (auto done = hand_over(dir); !done) return done;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (auto done = hand_over(it->path()); !done) return done;
  }
  if (ec)
    return vm::makeError(vm::ErrorKind::kInternal,
                         fmt::format("walking {}: {}", dir.string(), ec.message()));
  return {};
}

vm::Expected<void> dropPrivileges(const RunAs& run_as, bool allow_core_dumps) {
  if (::initgroups(run_as.user.c_str(), run_as.gid) != 0) return failed("initgroups");
  if (::setgid(run_as.gid) != 0) return failed("setgid");
  if (::setuid(run_as.uid) != 0) return failed("setuid");
  if (::setuid(0) == 0 || ::geteuid() == 0) {
    return vm::makeError(vm::ErrorKind::kInternal, "dropping privileges: root could be regained");
  }
  // Changing user left the process not dumpable (fs.suid_dumpable);
  // that is what was asked unless core dumps are allowed.
  if (allow_core_dumps && ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0)
    return failed("PR_SET_DUMPABLE");
  return {};
}

}  // namespace sandpool::server
