// sandpoold: runs tenants' functions in warm micro-VMs, served over
// Cap'n Proto RPC. See docs/server.md.
#include "server/logging.h"
#include "server/options.h"
#include "server/server.h"

int main(int argc, char** argv) {
  sandpool::server::captureSignals();
  auto parsed = sandpool::server::parseOptions(argc, argv);
  if (!parsed.options) return parsed.exit_code;
  if (!sandpool::server::setupLogging(parsed.options->log_level, parsed.options->log_format)) return 2;
  return sandpool::server::runServer(*parsed.options);
}
