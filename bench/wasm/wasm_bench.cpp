// What does a Wasm guest cost next to an SDK guest? Prints one table:
//
//   module to snapshot   per example (the Rust one where it was built):
//                        translation (wasm2c + cc), then boot
//                        and snapshot; the ELF's size and the snapshot's
//   warm empty call      an empty export, SDK (`echo`.nothing) and Wasm
//                        (`greeting`.nothing), reset included
//   SHA-256 of 512 KiB     the same kernel (guest/examples/sha256_kernel.h),
//                        native SDK guest and Wasm
//   memory per warm VM   private memory of 32 idle warm Wasm VMs beyond the
//                        snapshot they share
//
// Backend: SANDPOOL_BENCH_BACKEND (default emulated). Timed figures are the
// median of 5 runs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "bench_setup.h"
#include "vm/guest_image.h"
#include "vm/sandbox.h"
#include "vm/snapshot.h"
#include "wasm/translator.h"

namespace {

using namespace sandpool::vm;
using Clock = std::chrono::steady_clock;
using sandpool::bench::orExit;

constexpr int kRuns = 5;

std::vector<uint8_t> readExample(const std::string& name) {
  std::ifstream in(std::string(SANDPOOL_WASM_EXAMPLE_DIR) + "/" + name + ".wasm", std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "missing Wasm example %s\n", name.c_str());
    std::exit(1);
  }
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

struct WasmGuest {
  std::shared_ptr<const Snapshot> snapshot;
  size_t elf_size = 0;
  double translate_s = 0;
  double boot_s = 0;
};

WasmGuest bootWasm(const std::string& name) {
  WasmGuest guest;
  const auto module = readExample(name);
  const auto start = Clock::now();
  auto elf =
      orExit(sandpool::wasm::translateModule(module, sandpool::wasm::defaultToolchain(), {}));
  const auto translated = Clock::now();
  VmConfig config;
  auto image = orExit(GuestImage::parse(elf, config));
  guest.snapshot = orExit(Snapshot::boot(sandpool::bench::benchBackend(), image, config));
  guest.elf_size = elf.size();
  guest.translate_s = seconds(translated - start);
  guest.boot_s = seconds(Clock::now() - translated);
  return guest;
}

// Median seconds per call of `request` over `calls` calls, after one
// untimed call (a warm pool VM has run one).
double perCall(Sandbox& vm, const CallRequest& request, int calls) {
  if (auto first = vm.call(request); !first.result) {
    std::fprintf(stderr, "%s: %s\n", request.function.c_str(),
                 first.result.error().describe().c_str());
    std::exit(1);
  }
  std::vector<double> runs;
  for (int run = 0; run < kRuns; run++) {
    const auto start = Clock::now();
    for (int i = 0; i < calls; i++) vm.call(request);
    runs.push_back(seconds(Clock::now() - start) / calls);
  }
  return median(runs);
}

CallRequest request(std::string function, std::vector<Value> args = {}) {
  CallRequest call;
  call.function = std::move(function);
  call.args = std::move(args);
  call.startTimeout(sandpool::bench::kBenchCallTimeout);
  return call;
}

}  // namespace

int main() {
  std::printf("backend: %s\n\n",
              std::string(backendKindName(sandpool::bench::benchBackend().kind())).c_str());

  std::printf(
      "| example | translate (wasm2c + cc) | boot + snapshot | guest ELF | snapshot resident |\n");
  std::printf("|---|---|---|---|---|\n");
  WasmGuest greeting;
  WasmGuest sha256;
  for (const char* name : {"greeting", "checksum", "counter", "sha256", "rust_greeting"}) {
    if (!std::filesystem::exists(std::string(SANDPOOL_WASM_EXAMPLE_DIR) + "/" + name + ".wasm")) {
      std::printf("| %s | not built | | | |\n", name);
      continue;
    }
    WasmGuest guest = bootWasm(name);
    std::printf(
        "| %s | %.2f s | %.1f ms | %zu KiB | %llu KiB |\n", name, guest.translate_s,
        guest.boot_s * 1e3, guest.elf_size / 1024,
        static_cast<unsigned long long>(guest.snapshot->residentPages() * kPageSize / 1024));
    if (std::string(name) == "greeting") greeting = guest;
    if (std::string(name) == "sha256") sha256 = guest;
  }

  VmConfig config;
  auto sdk_vm = sandpool::bench::newBenchVm(sandpool::bench::bootBenchGuest("echo", config));
  auto wasm_vm = sandpool::bench::newBenchVm(greeting.snapshot);
  const double sdk_empty = perCall(*sdk_vm, request("nothing"), 100000);
  const double wasm_empty = perCall(*wasm_vm, request("nothing"), 100000);

  const Value input = Bytes(512 << 10, 'a');
  auto native_sha = sandpool::bench::newBenchVm(sandpool::bench::bootBenchGuest("sha256", config));
  auto wasm_sha = sandpool::bench::newBenchVm(sha256.snapshot);
  const double native_kernel = perCall(*native_sha, request("sha256", {input}), 10);
  const double wasm_kernel = perCall(*wasm_sha, request("sha256", {input}), 10);

  std::printf("\n| call | SDK guest | Wasm guest | difference |\n|---|---|---|---|\n");
  std::printf("| warm empty call, reset included | %.2f µs | %.2f µs | +%.2f µs |\n",
              sdk_empty * 1e6, wasm_empty * 1e6, (wasm_empty - sdk_empty) * 1e6);
  std::printf("| SHA-256 of 512 KiB | %.2f ms | %.2f ms | %.2fx |\n", native_kernel * 1e3,
              wasm_kernel * 1e3, wasm_kernel / native_kernel);

  constexpr int kVms = 32;
  const CallRequest greet = request("greet", {std::string("warm")});
  const long before = sandpool::bench::privateKib();
  std::vector<std::unique_ptr<Sandbox>> vms;
  for (int i = 0; i < kVms; i++) {
    vms.push_back(sandpool::bench::newBenchVm(greeting.snapshot));
    vms.back()->call(greet);
  }
  const long after = sandpool::bench::privateKib();
  std::printf(
      "\nprivate memory per idle warm Wasm VM (greeting, %d VMs, one greet call each): %.1f KiB\n",
      kVms, static_cast<double>(after - before) / kVms);
  return 0;
}
