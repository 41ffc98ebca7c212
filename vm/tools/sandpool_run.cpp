// sandpool-run: boot one guest on this machine and call one of its functions,
// without a server. For guest authors and for trying the VM core by hand.
//
//   sandpool-run [options] GUEST.elf [FUNCTION [TYPE:VALUE ...]]
//
// Without FUNCTION it lists the guest's exports.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "vm/backend.h"
#include "vm/guest_image.h"
#include "vm/sandbox.h"
#include "vm/snapshot.h"
#include "vm/value_text.h"
#include "wasm/translator.h"

namespace {

using namespace sandpool::vm;

void usage() {
  std::cerr
      << "usage: sandpool-run [options] GUEST [FUNCTION [TYPE:VALUE ...]]\n"
         "  GUEST is an SDK guest ELF or a wasm32-wasi module (translated first, docs/wasm.md).\n"
         "  Boots GUEST, snapshots it after its initialisation and calls FUNCTION\n"
         "  with the given arguments (types: i32 i64 u32 u64 f32 f64 bool string bytes;\n"
         "  bytes as hex, e.g. bytes:0x00ff). Without FUNCTION, lists the exports.\n"
         "options:\n"
         "  --backend=auto|kvm|emulated  vCPU backend (default auto: KVM where /dev/kvm opens\n"
         "                               and passes its self-test)\n"
         "  --kvm-speed-check=require|waive  waive: accept a KVM that runs guest code far\n"
         "                               below hardware speed (KVM under emulation)\n"
         "  --memory-mib=N               guest memory in MiB, a multiple of 2 (default 64)\n"
         "  --stack-kib=N, --input-kib=N, --output-kib=N\n"
         "                               stack, input and output buffer in KiB (default 1024)\n"
         "  --max-host-calls=N           host calls per call (default 100000)\n"
         "  --timeout-ms=N               per-call timeout (default 5000)\n"
         "  --repeat=N                   call N times on the same VM (default 1)\n";
}

bool readFile(const std::string& path, std::vector<uint8_t>& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  BackendChoice choice = BackendChoice::kAuto;
  KvmOptions kvm_options;
  VmConfig config;
  std::chrono::milliseconds timeout(5000);
  unsigned long repeat = 1;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; i++) {
    std::string arg = argv[i];
    auto value = [&arg](const char* prefix) { return arg.substr(std::string(prefix).size()); };
    if (arg.rfind("--backend=", 0) == 0) {
      if (!parseBackendChoice(value("--backend="), choice)) {
        std::cerr << "sandpool-run: unknown backend '" << value("--backend=") << "'\n";
        return 2;
      }
    } else if (arg.rfind("--kvm-speed-check=", 0) == 0) {
      if (!parseKvmSpeedCheck(value("--kvm-speed-check="), kvm_options)) {
        std::cerr << "sandpool-run: --kvm-speed-check takes require or waive\n";
        return 2;
      }
    } else if (arg.rfind("--memory-mib=", 0) == 0) {
      config.memory_size = std::stoull(value("--memory-mib=")) * kMiB;
    } else if (arg.rfind("--stack-kib=", 0) == 0) {
      config.stack_size = std::stoull(value("--stack-kib=")) * 1024;
    } else if (arg.rfind("--input-kib=", 0) == 0) {
      config.input_size = std::stoull(value("--input-kib=")) * 1024;
    } else if (arg.rfind("--output-kib=", 0) == 0) {
      config.output_size = std::stoull(value("--output-kib=")) * 1024;
    } else if (arg.rfind("--max-host-calls=", 0) == 0) {
      config.max_host_calls = static_cast<uint32_t>(std::stoul(value("--max-host-calls=")));
    } else if (arg.rfind("--timeout-ms=", 0) == 0) {
      timeout = std::chrono::milliseconds(std::stoull(value("--timeout-ms=")));
    } else if (arg.rfind("--repeat=", 0) == 0) {
      repeat = std::stoul(value("--repeat="));
    } else if (arg == "--help" || arg == "-h") {
      usage();
      return 0;
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.empty()) {
    usage();
    return 2;
  }

  std::string why;
  auto backend = openBackend(choice, why, kvm_options);
  if (!backend) {
    std::cerr << "sandpool-run: " << backend.error().describe() << "\n";
    return 1;
  }
  std::cerr << "backend: " << why << "\n";

  std::vector<uint8_t> upload;
  if (!readFile(positional[0], upload)) {
    std::cerr << "sandpool-run: cannot read " << positional[0] << "\n";
    return 1;
  }
  auto elf = sandpool::wasm::guestImageFromUpload(std::move(upload));
  if (!elf) {
    std::cerr << "sandpool-run: " << elf.error().describe() << "\n";
    return 1;
  }
  auto image = GuestImage::parse(*elf, config);
  if (!image) {
    std::cerr << "sandpool-run: " << image.error().describe() << "\n";
    return 1;
  }
  auto snapshot = Snapshot::boot(**backend, *image, config);
  if (!snapshot) {
    std::cerr << "sandpool-run: " << snapshot.error().describe() << "\n";
    return 1;
  }
  if (positional.size() == 1) {
    for (const FunctionSignature& sig : (*snapshot)->exports()) std::cout << sig.describe() << "\n";
    return 0;
  }

  CallRequest request;
  request.function = positional[1];
  for (size_t i = 2; i < positional.size(); i++) {
    auto value = parseTypedValue(positional[i]);
    if (!value) {
      std::cerr << "sandpool-run: " << value.error().message << "\n";
      return 2;
    }
    request.args.push_back(std::move(value.value()));
  }

  auto sandbox = Sandbox::create(**backend, *snapshot);
  if (!sandbox) {
    std::cerr << "sandpool-run: " << sandbox.error().describe() << "\n";
    return 1;
  }
  int status = 0;
  for (unsigned long n = 0; n < repeat; n++) {
    request.startTimeout(timeout);
    CallResult result = (*sandbox)->call(request);
    if (!result.output.empty())
      std::cout << result.output << (result.output_truncated ? "[output truncated]\n" : "");
    if (result.result) {
      std::cout << formatValue(result.result.value()) << "\n";
    } else {
      std::cerr << "error: " << result.result.error().describe() << "\n";
      status = 1;
    }
    std::cerr << "run " << result.stats.run_time.count() / 1000.0 << " us, reset "
              << result.stats.reset_time.count() / 1000.0 << " us, " << result.stats.pages_restored
              << " pages restored\n";
  }
  return status;
}
