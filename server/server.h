// sandpoold's lifetime: builds the parts in dependency order, serves until
// SIGTERM or SIGINT, then shuts down in the order DESIGN.md gives: stop
// accepting, let in-flight calls finish (or fail) within the grace period,
// stop and join the workers, the blocking pool and the Asio thread, deliver
// what they posted, and only then leave the KJ event loop.
#pragma once

#include "server/options.h"

namespace sandpool::server {

// Call captureSignals() first thing in main(), before any thread exists, so
// that SIGTERM/SIGINT stay blocked in every thread and reach the KJ loop.
void captureSignals();

// Returns the process exit code: 0 after a clean shutdown.
int runServer(const ServerOptions& options);

// sandpoold started with this as its first argument, a descriptor number
// as its second and a user name (or nothing) as its third, is the Wasm
// translator process that runServer()
// starts for itself (wasm/translator_service.h); never given by hand.
inline constexpr const char* kServeWasmTranslations = "--serve-wasm-translations";

}  // namespace sandpool::server
