#include "vm/kvm/self_test.h"

#include <fmt/format.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "vm/kvm/kvm_ioctl.h"
#include "vm/mapping.h"
#include "vm/unique_fd.h"

namespace sandpool::vm::kvm {
namespace {

constexpr uint64_t kMemory = 8ull << 20;
constexpr uint64_t kCode = 0x400000;
constexpr uint64_t kData = 0x600000;
constexpr uint16_t kReadyPort = 0x5500;
constexpr uint16_t kDonePort = 0x5501;
constexpr uint32_t kMxcsrDefault = 0x1f80;

// mov edx, 0x5500; out dx, eax            (READY: the reset point)
// stmxcsr [0x600000]; movups [0x600010], xmm0
// mov eax, [0x600000]; mov edx, 0x5501; out dx, eax; hlt
constexpr uint8_t kProgram[] = {
    0xba, 0x00, 0x55, 0x00, 0x00, 0xef,
    0x0f, 0xae, 0x1c, 0x25, 0x00, 0x00, 0x60, 0x00,
    0x0f, 0x11, 0x04, 0x25, 0x10, 0x00, 0x60, 0x00,
    0x8b, 0x04, 0x25, 0x00, 0x00, 0x60, 0x00,
    0xba, 0x01, 0x55, 0x00, 0x00, 0xef, 0xf4,
};

class LastOut final : public PortHandler {
 public:
  uint16_t port = 0;
  uint32_t value = 0;
  PortAction onPortOut(uint16_t p, uint32_t v) override {
    port = p;
    value = v;
    return PortAction::kStop;
  }
};

Error failed(std::string what) {
  return makeError(ErrorKind::kBackendUnavailable,
                   fmt::format("KVM self-test: {}; this /dev/kvm cannot run sandpool guests (a "
                               "paravirtual KVM such as kvm-pvm?)",
                               what));
}

Expected<void> expectOut(Vcpu& vcpu, uint16_t port, uint32_t value, const char* step) {
  LastOut out;
  RunExit exit = vcpu.run(out);
  if (exit.kind != RunExit::Kind::kStopped) {
    return failed(fmt::format("{}: {}", step,
                              exit.kind == RunExit::Kind::kFault ? exit.reason : "timeout"));
  }
  if (out.port != port || out.value != value) {
    return failed(fmt::format("{}: out {:#x} <- {:#x}, expected {:#x} <- {:#x}", step, out.port,
                              out.value, port, value));
  }
  return {};
}

}  // namespace

Expected<void> runSelfTest(Backend& backend) {
  UniqueFd memfd(::memfd_create("sandpool-kvm-self-test", MFD_CLOEXEC));
  if (!memfd.valid() || ::ftruncate(memfd.get(), kMemory) != 0) {
    return makeError(ErrorKind::kInternal,
                     fmt::format("KVM self-test: memfd of {} bytes: {}", kMemory, errnoText(errno)));
  }
  MemoryLayout layout;
  layout.memory_size = kMemory;
  layout.regions = {Region{kCode, kPageSize, kAccessRead | kAccessExecute, "code"},
                    Region{kData, kPageSize, kAccessRead | kAccessWrite, "data"}};
  auto contents = Mapping::map(kMemory, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(),
                               "KVM self-test image");
  if (!contents) return contents.takeError();
  if (auto prepared = backend.prepareImage(contents->bytes(), layout); !prepared) return prepared;
  std::memcpy(contents->data() + kCode, kProgram, sizeof(kProgram));

  auto memory = GuestMemory::mapPrivate(memfd.get(), kMemory, PROT_READ | PROT_WRITE);
  if (!memory) return memory.takeError();
  auto vcpu = backend.createVcpu(*memory, layout, kCode);
  if (!vcpu) return vcpu.takeError();
  if (auto ready = expectOut(**vcpu, kReadyPort, 0, "boot to READY"); !ready) return ready;
  if (auto armed = (*vcpu)->armReset(contents->bytes()); !armed) return armed;
  for (const char* step : {"first call", "call after a reset"}) {
    if (auto done = expectOut(**vcpu, kDonePort, kMxcsrDefault, step); !done) return done;
    if (auto reset = (*vcpu)->reset(); !reset) return reset.takeError();
  }
  return {};
}

}  // namespace sandpool::vm::kvm
