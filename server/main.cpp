// sandpoold: runs tenants' functions in warm micro-VMs, served over
// Cap'n Proto RPC. See docs/server.md.
#include "server/logging.h"
#include "server/options.h"
#include "server/server.h"

#include <cstdlib>
#include <cstring>

#include "server/privileges.h"
#include "wasm/translator_service.h"

int main(int argc, char** argv) {
  if (argc == 5 && std::strcmp(argv[1], sandpool::server::kServeWasmTranslations) == 0) {
    // The translator process: the server's user, then serve.
    if (argv[3][0] != '\0') {
      auto run_as = sandpool::server::resolveRunAs(argv[3], true);
      if (!run_as || !*run_as || !sandpool::server::dropPrivileges(**run_as, false)) return 1;
    }
    return sandpool::wasm::serveTranslations(std::atoi(argv[2]),
                                             sandpool::wasm::toolchainFromSdk(argv[4]));
  }
  sandpool::server::captureSignals();
  auto parsed = sandpool::server::parseOptions(argc, argv);
  if (!parsed.options) return parsed.exit_code;
  if (!sandpool::server::setupLogging(parsed.options->log_level, parsed.options->log_format))
    return 2;
  return sandpool::server::runServer(*parsed.options);
}
