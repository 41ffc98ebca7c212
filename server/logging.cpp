#include "server/logging.h"

#include <iostream>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "common/untrusted_text.h"

namespace sandpool::server {

namespace {

// %j: the message, escaped for a JSON string. Guest- and client-supplied
// text reaches the message already escaped (common/untrusted_text.h); a byte
// that is still not UTF-8 (from a host error, say) becomes U+FFFD here, so
// that every line stays valid JSON whatever the message holds.
class JsonMessageFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string_view payload(msg.payload.data(), msg.payload.size());
    for (size_t at = 0; at < payload.size();) {
      const char c = payload[at];
      const auto byte = static_cast<unsigned char>(c);
      if (byte >= 0x80) {
        auto decoded = text::decodeUtf8Char(payload.substr(at));
        if (decoded) {
          dest.append(payload.substr(at, decoded->size));
          at += decoded->size;
        } else {
          dest.append(std::string_view("\\ufffd"));
          ++at;
        }
        continue;
      }
      switch (c) {
        case '"': dest.append(std::string_view("\\\"")); break;
        case '\\': dest.append(std::string_view("\\\\")); break;
        case '\n': dest.append(std::string_view("\\n")); break;
        default:
          if (byte < 0x20) {
            const char esc[] = {'\\', 'u', '0', '0', kHex[byte >> 4], kHex[byte & 15]};
            dest.append(esc, esc + sizeof esc);
          } else {
            dest.push_back(c);
          }
      }
      ++at;
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessageFlag>();
  }
};

}  // namespace

bool setupLogging(const std::string& level, const std::string& format) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    std::cerr << "sandpoold: unknown --log-level '" << level << "'\n";
    return false;
  }
  auto logger = spdlog::stderr_logger_mt("sandpoold");
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  if (format == "json") {
    formatter->add_flag<JsonMessageFlag>('j').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%e","level":"%l","msg":"%j"})");
  } else if (format == "text") {
    formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  } else {
    std::cerr << "sandpoold: unknown --log-format '" << format << "'\n";
    return false;
  }
  logger->set_formatter(std::move(formatter));
  logger->set_level(parsed);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return true;
}

}  // namespace sandpool::server
