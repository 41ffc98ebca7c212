// parseExportTable on arbitrary bytes, as the host reads the table a guest
// wrote before READY: refused with kInvalidGuest, or a list the server can
// trust (at most SANDPOOL_MAX_EXPORTS functions, unique names of 1 to
// SANDPOOL_MAX_NAME bytes, at most SANDPOOL_MAX_PARAMS valid non-void
// parameters, a valid result type).
#include <cstdint>
#include <set>
#include <span>
#include <string>

#include <sandpool/abi.h>

#include "tests/fuzz/fuzz_check.h"
#include "vm/guest_protocol.h"

using namespace sandpool::vm;
using sandpool::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto exports = parseExportTable(std::span<const uint8_t>(data, size));
  if (!exports) {
    require(exports.error().kind == ErrorKind::kInvalidGuest,
            "a refused table is an invalid guest");
    return 0;
  }
  require(exports->size() <= SANDPOOL_MAX_EXPORTS, "at most SANDPOOL_MAX_EXPORTS exports");
  std::set<std::string> names;
  for (const FunctionSignature& sig : *exports) {
    require(!sig.name.empty() && sig.name.size() <= SANDPOOL_MAX_NAME,
            "names are 1 to SANDPOOL_MAX_NAME bytes");
    require(names.insert(sig.name).second, "export names are unique");
    require(sig.params.size() <= SANDPOOL_MAX_PARAMS, "at most SANDPOOL_MAX_PARAMS parameters");
    require(isValidValueType(static_cast<uint8_t>(sig.result)), "result types are valid");
    for (ValueType param : sig.params) {
      require(isValidValueType(static_cast<uint8_t>(param)) && param != ValueType::kVoid,
              "parameter types are valid and not void");
    }
    require(!sig.describe().empty(), "a signature describes itself");
  }
  return 0;
}
