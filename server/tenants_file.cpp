#include "server/tenants_file.h"

#include <charconv>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

namespace sandpool::server {

namespace {

std::string trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return {};
  size_t e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

vm::Error lineError(size_t line, const std::string& message) {
  return vm::makeError(vm::ErrorKind::kInternal,
                       fmt::format("tenants file line {}: {}", line, message));
}

bool parseUint(const std::string& text, uint64_t& out) {
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

}  // namespace

bool isValidName(std::string_view name) {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

vm::Expected<std::vector<TenantConfig>> parseTenantsFile(const std::string& text,
                                                         uint32_t default_queue_length) {
  std::vector<TenantConfig> tenants;
  std::vector<size_t> section_lines;
  std::istringstream in(text);
  std::string raw;
  size_t line = 0;
  while (std::getline(in, raw)) {
    ++line;
    std::string s = trim(raw);
    if (s.empty() || s[0] == '#') continue;
    if (s.front() == '[') {
      if (s.back() != ']') return lineError(line, fmt::format("section header '{}' lacks ']'", s));
      std::string name = trim(std::string_view(s).substr(1, s.size() - 2));
      if (!isValidName(name)) {
        return lineError(
            line,
            fmt::format(
                "tenant name '{}' is not 1-64 characters of [A-Za-z0-9._-] starting with no '.'",
                name));
      }
      TenantConfig t;
      t.name = name;
      t.quota.queue_length = default_queue_length;
      tenants.push_back(std::move(t));
      section_lines.push_back(line);
      continue;
    }
    size_t eq = s.find('=');
    if (eq == std::string::npos)
      return lineError(line, fmt::format("expected 'key = value', got '{}'", s));
    if (tenants.empty()) return lineError(line, "key outside a [tenant] section");
    std::string key = trim(std::string_view(s).substr(0, eq));
    std::string value = trim(std::string_view(s).substr(eq + 1));
    TenantConfig& t = tenants.back();
    if (key == "token") {
      t.token = value;
      continue;
    }
    uint64_t n = 0;
    if (!parseUint(value, n))
      return lineError(line, fmt::format("value of '{}' is not a number: '{}'", key, value));
    uint32_t* count = nullptr;
    if (key == "max_vms")
      count = &t.quota.max_vms;
    else if (key == "max_guests")
      count = &t.quota.max_guests;
    else if (key == "max_concurrent_calls")
      count = &t.quota.max_concurrent_calls;
    else if (key == "queue_length")
      count = &t.quota.queue_length;
    else if (key != "max_memory_mib")
      return lineError(line, fmt::format("unknown key '{}'", key));
    // Counts are 32-bit; the memory quota is kept in bytes, which must fit 64 bits.
    const uint64_t limit = count ? UINT32_MAX : kMaxMemoryMib;
    if (n == 0 || n > limit) {
      return lineError(line,
                       fmt::format("'{}' must be between 1 and {}, got {}", key, limit, value));
    }
    if (count)
      *count = static_cast<uint32_t>(n);
    else
      t.quota.max_memory_bytes = n << 20;
  }
  std::set<std::string> names, tokens;
  for (size_t i = 0; i < tenants.size(); ++i) {
    const TenantConfig& t = tenants[i];
    if (t.token.size() < 16) {
      return lineError(section_lines[i],
                       fmt::format("tenant '{}' needs a token of at least 16 characters", t.name));
    }
    if (!names.insert(t.name).second)
      return lineError(section_lines[i], fmt::format("tenant '{}' is defined twice", t.name));
    if (!tokens.insert(t.token).second)
      return lineError(section_lines[i],
                       fmt::format("tenant '{}' reuses another tenant's token", t.name));
  }
  if (tenants.empty())
    return vm::makeError(vm::ErrorKind::kInternal, "tenants file defines no tenant");
  return tenants;
}

vm::Expected<std::vector<TenantConfig>> loadTenantsFile(const std::string& path,
                                                        uint32_t default_queue_length) {
  std::ifstream in(path);
  if (!in)
    return vm::makeError(vm::ErrorKind::kInternal,
                         fmt::format("cannot open tenants file '{}'", path));
  std::stringstream text;
  text << in.rdbuf();
  auto parsed = parseTenantsFile(text.str(), default_queue_length);
  if (!parsed)
    return vm::makeError(vm::ErrorKind::kInternal,
                         fmt::format("{}: {}", path, parsed.error().message));
  return parsed;
}

}  // namespace sandpool::server
