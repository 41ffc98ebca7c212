// spdlog set-up for sandpoold: one line per event on stderr, as text
// ("2024-01-01T12:00:00.000 info event=upload tenant=acme guest=hello ...")
// or as JSON ({"time":...,"level":...,"msg":"event=upload ..."}).
#pragma once

#include <string>

namespace sandpool::server {

// Returns false (and says why on stderr) for an unknown level or format.
bool setupLogging(const std::string& level, const std::string& format);

}  // namespace sandpool::server
