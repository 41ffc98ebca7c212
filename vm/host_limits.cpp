#include "vm/host_limits.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include <fmt/format.h>

#include "vm/unique_fd.h"

namespace sandpool::vm {

namespace {

Error hostLimitError(const std::string& what) { return makeError(ErrorKind::kHostLimit, what); }

Expected<uint64_t> countLines(const char* path) {
  UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0)
    return makeError(ErrorKind::kInternal, fmt::format("open {}: {}", path, strerror(errno)));
  char buffer[64 * 1024];
  uint64_t lines = 0;
  for (;;) {
    const ssize_t got = ::read(fd.get(), buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0)
      return makeError(ErrorKind::kInternal, fmt::format("read {}: {}", path, strerror(errno)));
    if (got == 0) return lines;
    lines += static_cast<uint64_t>(std::count(buffer, buffer + got, '\n'));
  }
}

Expected<uint64_t> countOpenFiles() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return makeError(ErrorKind::kInternal, std::string("opendir /proc/self/fd: ") + strerror(errno));
  uint64_t entries = 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') entries++;
  }
  ::closedir(dir);
  return entries > 0 ? entries - 1 : 0;  // less the directory's own fd
}

uint64_t readMappingLimit() {
  std::ifstream in("/proc/sys/vm/max_map_count");
  uint64_t limit = 65530;  // the kernel's default, where the file cannot be read
  in >> limit;
  return limit;
}

uint64_t readFileLimit() {
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) != 0 || files.rlim_cur == RLIM_INFINITY) return UINT64_MAX;
  return files.rlim_cur;
}

// VMs that may still be created before the counts must be read again; the
// file limit they were computed under, so a changed limit forces a re-count
// (vm.max_map_count is a sysctl, read only when counting).
std::atomic<int64_t> g_vms_before_recount{0};
std::atomic<uint64_t> g_counted_file_limit{0};

}  // namespace

uint64_t mappingMargin(uint64_t mapping_limit) {
  return std::max<uint64_t>(256, mapping_limit / 16);
}

uint64_t fileMargin(uint64_t file_limit) { return std::max<uint64_t>(32, file_limit / 16); }

Expected<HostUsage> readHostUsage() {
  HostUsage usage;
  auto mappings = countLines("/proc/self/maps");
  if (!mappings) return mappings.takeError();
  auto files = countOpenFiles();
  if (!files) return files.takeError();
  usage.mappings = *mappings;
  usage.files = *files;
  usage.mapping_limit = readMappingLimit();
  usage.file_limit = readFileLimit();
  return usage;
}

Expected<void> checkRoomForVm() {
  const uint64_t file_limit = readFileLimit();
  const bool limits_unchanged = g_counted_file_limit.load() == file_limit;
  if (limits_unchanged && g_vms_before_recount.fetch_sub(1) > 0) return {};
  auto usage = readHostUsage();
  if (!usage) return usage.takeError();
  const uint64_t map_margin = mappingMargin(usage->mapping_limit);
  const uint64_t file_margin = fileMargin(usage->file_limit);
  const uint64_t map_room =
      usage->mapping_limit > usage->mappings + map_margin
          ? usage->mapping_limit - usage->mappings - map_margin
          : 0;
  const uint64_t file_room = usage->file_limit > usage->files + file_margin
                                 ? usage->file_limit - usage->files - file_margin
                                 : 0;
  g_counted_file_limit.store(usage->file_limit);
  if (map_room < kMappingsPerVm) {
    g_vms_before_recount.store(0);
    return hostLimitError(
        fmt::format("{} of {} memory mappings (vm.max_map_count) in use, {} kept free",
                    usage->mappings, usage->mapping_limit, map_margin));
  }
  if (file_room < kFilesPerVm) {
    g_vms_before_recount.store(0);
    return hostLimitError(fmt::format("{} of {} open files (RLIMIT_NOFILE) in use, {} kept free",
                                      usage->files, usage->file_limit, file_margin));
  }
  // This VM takes one of the creations the headroom allows.
  const uint64_t allowed = std::min(map_room / kMappingsPerVm, file_room / kFilesPerVm);
  g_vms_before_recount.store(static_cast<int64_t>(allowed) - 1);
  return {};
}

Expected<uint64_t> raiseFileLimit() {
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) != 0)
    return makeError(ErrorKind::kInternal, std::string("getrlimit(RLIMIT_NOFILE): ") + strerror(errno));
  if (files.rlim_cur != files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &files) != 0) {
      return makeError(ErrorKind::kInternal, fmt::format("setrlimit(RLIMIT_NOFILE) to {}: {}",
                                                         files.rlim_max, strerror(errno)));
    }
  }
  return files.rlim_cur == RLIM_INFINITY ? UINT64_MAX : files.rlim_cur;
}

}  // namespace sandpool::vm
