#include "server/guest_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <fmt/format.h>
#include <openssl/evp.h>

#include "server/tenants_file.h"
#include "vm/unique_fd.h"

namespace sandpool::server {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'S', 'P', 'G', 'U', 'E', 'S', 'T', '1'};
constexpr size_t kHeaderSize = sizeof kMagic + 32;
constexpr std::string_view kSuffix = ".guest";
constexpr std::string_view kSettingsSuffix = ".settings";
constexpr std::string_view kVmSettingsSuffix = ".vm";
constexpr std::string_view kTemporaryPrefix = ".";
constexpr std::string_view kTemporarySuffix = ".tmp";

// Where writeAtomically() writes `name` before renaming it into place.
std::string temporaryName(const std::string& name) {
  return std::string(kTemporaryPrefix) + name + std::string(kTemporarySuffix);
}

bool isTemporaryName(std::string_view file) {
  return file.size() > kTemporaryPrefix.size() + kTemporarySuffix.size() &&
         file.starts_with(kTemporaryPrefix) && file.ends_with(kTemporarySuffix);
}

std::array<uint8_t, 32> sha256(std::span<const uint8_t> data) {
  std::array<uint8_t, 32> digest{};
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), digest.data(), &size, EVP_sha256(), nullptr);
  return digest;
}

std::string hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

vm::Error ioError(const std::string& step, const fs::path& path) {
  return vm::makeError(vm::ErrorKind::kInternal,
                       fmt::format("{} '{}': {}", step, path.string(), std::strerror(errno)));
}

vm::Expected<void> writeAll(int fd, std::span<const uint8_t> data, const fs::path& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ioError("write", path);
    }
    data = data.subspan(static_cast<size_t>(n));
  }
  return {};
}

// Reads and checks one stored guest file; errors name the guest and tenant,
// never the host path.
vm::Expected<GuestStore::Stored> readGuest(const std::string& tenant, const std::string& guest,
                                           const fs::path& path) {
  auto refused = [&](const std::string& why) {
    return vm::makeError(vm::ErrorKind::kInternal,
                         fmt::format("guest '{}' of tenant '{}': {}", guest, tenant, why));
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) return refused("cannot open its file");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) return refused("cannot read its file");
  if (bytes.size() < kHeaderSize || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    return refused(
        fmt::format("stored file has no sandpool guest header ({} bytes)", bytes.size()));
  }
  std::span<const uint8_t> elf(bytes.data() + kHeaderSize, bytes.size() - kHeaderSize);
  std::array<uint8_t, 32> digest = sha256(elf);
  if (std::memcmp(digest.data(), bytes.data() + sizeof kMagic, 32) != 0) {
    return refused(fmt::format("stored file is corrupted (SHA-256 {} != recorded {})", hex(digest),
                               hex({bytes.data() + sizeof kMagic, 32})));
  }
  return GuestStore::Stored{guest, std::vector<uint8_t>(elf.begin(), elf.end()), hex(digest)};
}

vm::Expected<void> fsyncDir(const fs::path& dir) {
  vm::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ioError("open directory", dir);
  if (::fsync(fd.get()) != 0) return ioError("fsync directory", dir);
  return {};
}

}  // namespace

std::string sha256Hex(std::span<const uint8_t> data) { return hex(sha256(data)); }

GuestStore::GuestStore(fs::path root) : root_(std::move(root)) {}

// Writes `parts` to dir/name atomically and durably: temporary file, fsync,
// rename over the final name, fsync of the directory.
vm::Expected<void> GuestStore::writeAtomically(
    const std::string& tenant, const std::string& name,
    std::initializer_list<std::span<const uint8_t>> parts) const {
  fs::path dir = root_ / tenant;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return vm::makeError(vm::ErrorKind::kInternal,
                         fmt::format("create directory '{}': {}", dir.string(), ec.message()));
  }
  fs::path final_path = dir / name;
  fs::path temp_path = dir / temporaryName(name);
  vm::UniqueFd fd(::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return ioError("create", temp_path);
  for (auto part : parts) {
    if (auto r = writeAll(fd.get(), part, temp_path); !r) return r;
  }
  if (::fsync(fd.get()) != 0) return ioError("fsync", temp_path);
  fd.reset();
  if (::rename(temp_path.c_str(), final_path.c_str()) != 0) return ioError("rename to", final_path);
  return fsyncDir(dir);
}

vm::Expected<void> GuestStore::save(const std::string& tenant, const std::string& guest,
                                    std::span<const uint8_t> elf) const {
  std::array<uint8_t, 32> digest = sha256(elf);
  std::vector<uint8_t> header(kMagic, kMagic + sizeof kMagic);
  header.insert(header.end(), digest.begin(), digest.end());
  return writeAtomically(tenant, guest + std::string(kSuffix), {header, elf});
}

vm::Expected<void> GuestStore::saveSettings(const std::string& tenant, const std::string& guest,
                                            pool::PoolSettings settings) const {
  std::string text = "min_warm = " + std::to_string(settings.min_warm) +
                     "\nmax_vms = " + std::to_string(settings.max_vms) + "\n";
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  return writeAtomically(tenant, guest + std::string(kSettingsSuffix), {bytes});
}

std::optional<pool::PoolSettings> GuestStore::loadSettings(const std::string& tenant,
                                                           const std::string& guest) const {
  std::ifstream in(root_ / tenant / (guest + std::string(kSettingsSuffix)));
  if (!in) return std::nullopt;
  pool::PoolSettings settings;
  int found = 0;
  std::string key, eq;
  uint32_t value;
  while (in >> key >> eq >> value) {
    if (eq != "=") return std::nullopt;
    if (key == "min_warm") settings.min_warm = value, found |= 1;
    if (key == "max_vms") settings.max_vms = value, found |= 2;
  }
  if (found != 3) return std::nullopt;
  return settings;
}

vm::Expected<void> GuestStore::remove(const std::string& tenant, const std::string& guest) const {
  fs::path dir = root_ / tenant;
  for (std::string_view suffix : {kSuffix, kSettingsSuffix, kVmSettingsSuffix}) {
    fs::path path = dir / (guest + std::string(suffix));
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ioError("unlink", path);
  }
  return fsyncDir(dir);
}

vm::Expected<GuestStore::Stored> GuestStore::load(const std::string& tenant,
                                                  const std::string& guest) const {
  return readGuest(tenant, guest, root_ / tenant / (guest + std::string(kSuffix)));
}

vm::Expected<void> GuestStore::saveVmSettings(const std::string& tenant, const std::string& guest,
                                              const VmSettings& settings) const {
  std::string text = "memory_bytes = " + std::to_string(settings.memory_bytes) +
                     "\nstack_bytes = " + std::to_string(settings.stack_bytes) +
                     "\ninput_bytes = " + std::to_string(settings.input_bytes) +
                     "\noutput_bytes = " + std::to_string(settings.output_bytes) +
                     "\nmax_host_calls = " + std::to_string(settings.max_host_calls) + "\n";
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  return writeAtomically(tenant, guest + std::string(kVmSettingsSuffix), {bytes});
}

vm::Expected<VmSettings> GuestStore::loadVmSettings(const std::string& tenant,
                                                    const std::string& guest) const {
  const fs::path path = root_ / tenant / (guest + std::string(kVmSettingsSuffix));
  std::error_code ec;
  if (!fs::exists(path, ec) && !ec) return VmSettings{};
  std::ifstream in(path);
  if (!in) return ioError("open", path);
  VmSettings settings;
  std::string key, eq;
  uint64_t value = 0;
  while (in >> key >> eq >> value) {
    if (eq != "=") break;
    if (key == "memory_bytes") settings.memory_bytes = value;
    if (key == "stack_bytes") settings.stack_bytes = value;
    if (key == "input_bytes") settings.input_bytes = value;
    if (key == "output_bytes") settings.output_bytes = value;
    if (key == "max_host_calls" && value <= UINT32_MAX)
      settings.max_host_calls = static_cast<uint32_t>(value);
  }
  if (!in.eof()) {
    return vm::makeError(
        vm::ErrorKind::kInternal,
        fmt::format("VM settings of guest '{}' of tenant '{}' are malformed ('{}')", guest, tenant,
                    path.filename().string()));
  }
  return settings;
}

std::vector<GuestStore::Stored> GuestStore::loadAll(const std::string& tenant,
                                                    std::vector<std::string>& errors) const {
  std::vector<Stored> out;
  fs::path dir = root_ / tenant;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string file = entry.path().filename().string();
    if (file.size() <= kSuffix.size() || !file.ends_with(kSuffix)) continue;
    std::string guest = file.substr(0, file.size() - kSuffix.size());
    if (!isValidName(guest)) continue;
    auto stored = readGuest(tenant, guest, entry.path());
    if (!stored) {
      errors.push_back(stored.error().message);
      continue;
    }
    out.push_back(std::move(stored.value()));
  }
  std::sort(out.begin(), out.end(),
            [](const Stored& a, const Stored& b) { return a.guest < b.guest; });
  return out;
}

std::vector<GuestStore::StaleTemporary> GuestStore::removeStaleTemporaries(
    fs::file_time_type started) const {
  std::vector<StaleTemporary> found;
  std::error_code ec;
  const fs::directory_iterator end;
  for (fs::directory_iterator tenant_dir(root_, ec); !ec && tenant_dir != end;
       tenant_dir.increment(ec)) {
    if (!tenant_dir->is_directory(ec)) continue;
    for (fs::directory_iterator entry(tenant_dir->path(), ec); !ec && entry != end;
         entry.increment(ec)) {
      std::string file = entry->path().filename().string();
      if (!isTemporaryName(file) || !entry->is_regular_file(ec) ||
          entry->last_write_time(ec) >= started)
        continue;
      uintmax_t bytes = entry->file_size(ec);
      StaleTemporary stale{entry->path(), ec ? 0 : bytes, std::nullopt};
      if (::unlink(entry->path().c_str()) != 0) stale.error = std::strerror(errno);
      found.push_back(std::move(stale));
    }
    ec.clear();  // an unreadable tenant directory does not stop the others
  }
  return found;
}

}  // namespace sandpool::server
