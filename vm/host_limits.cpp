#include "vm/host_limits.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

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

std::atomic<HostLimitWatch*> g_watch{nullptr};

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

HostLimitWatch::HostLimitWatch(uint64_t mapping_limit_cap)
    : mapping_limit_cap_(mapping_limit_cap) {
  thread_ = std::thread([this] { countLoop(); });
  g_watch.store(this);
}

HostLimitWatch::~HostLimitWatch() {
  g_watch.store(nullptr);
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  count_wanted_cv_.notify_all();
  counted_cv_.notify_all();
  thread_.join();
}

Expected<void> HostLimitWatch::takeRoomForVm() {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (vms_before_recount_ > 0) {
      vms_before_recount_--;
      return {};
    }
    if (refusal_ && std::chrono::steady_clock::now() < refusal_until_) return *refusal_;
    const uint64_t counts_seen = counts_done_;
    count_wanted_ = true;
    count_wanted_cv_.notify_one();
    counted_cv_.wait(lock, [&] { return counts_done_ != counts_seen || stopping_; });
    if (stopping_) return hostLimitError("the server is stopping");
  }
}

void HostLimitWatch::countLoop() {
  pthread_setname_np(pthread_self(), "sp-host-limits");
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    count_wanted_cv_.wait(lock, [this] { return count_wanted_ || stopping_; });
    if (stopping_) break;
    lock.unlock();
    count();
    lock.lock();
  }
}

void HostLimitWatch::count() {
  auto usage = readHostUsage();
  std::optional<Error> refusal;
  uint64_t allowed = 0;
  if (!usage) {
    refusal = usage.takeError();
  } else {
    if (mapping_limit_cap_ != 0)
      usage->mapping_limit = std::min(usage->mapping_limit, mapping_limit_cap_);
    const uint64_t map_margin = mappingMargin(usage->mapping_limit);
    const uint64_t file_margin = fileMargin(usage->file_limit);
    const uint64_t map_room = usage->mapping_limit > usage->mappings + map_margin
                                  ? usage->mapping_limit - usage->mappings - map_margin
                                  : 0;
    const uint64_t file_room = usage->file_limit > usage->files + file_margin
                                   ? usage->file_limit - usage->files - file_margin
                                   : 0;
    allowed = std::min(map_room / kMappingsPerVm, file_room / kFilesPerVm);
    if (map_room < kMappingsPerVm) {
      spdlog::warn("event=host_limit limit=vm.max_map_count mappings={} mapping_limit={} kept_free={}",
                   usage->mappings, usage->mapping_limit, map_margin);
      refusal = hostLimitError(fmt::format(
          "vm.max_map_count: {} of {} memory mappings in use, {} kept free; no new VM until "
          "some are dropped",
          usage->mappings, usage->mapping_limit, map_margin));
    } else if (file_room < kFilesPerVm) {
      spdlog::warn("event=host_limit limit=RLIMIT_NOFILE open_files={} file_limit={} kept_free={}",
                   usage->files, usage->file_limit, file_margin);
      refusal = hostLimitError(fmt::format(
          "RLIMIT_NOFILE: {} of {} open files in use, {} kept free; no new VM until some are "
          "dropped",
          usage->files, usage->file_limit, file_margin));
    }
  }
  std::lock_guard lock(mutex_);
  vms_before_recount_ = allowed;
  refusal_ = std::move(refusal);
  refusal_until_ = std::chrono::steady_clock::now() + kRefusalHoldsFor;
  count_wanted_ = false;
  counts_done_++;
  counted_cv_.notify_all();
}

Expected<void> takeRoomForVm() {
  HostLimitWatch* watch = g_watch.load();
  return watch ? watch->takeRoomForVm() : Expected<void>{};
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
