// A guest's host call on arbitrary bytes: the input is what the guest left
// in the host-call buffer when it wrote SANDPOOL_PORT_HOST_CALL, and
// GuestSession::onPortOut (the one entry the vCPU loop has into host-call
// decoding) serves it over real guest memory and a real emulated vCPU that
// never runs. Every request either stops the call with kBadHostCall or is
// served: the reply the guest then finds in the buffer has a valid header
// and, when OK, exactly one encoded value.
#include <sys/mman.h>
#include <unistd.h>

#include <elf.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <type_traits>
#include <variant>
#include <vector>

#include <sandpool/abi.h>

#include "tests/fuzz/fuzz_check.h"
#include "vm/backend.h"
#include "vm/guest_image.h"
#include "vm/guest_session.h"
#include "vm/layout.h"
#include "vm/unique_fd.h"

using namespace sandpool::vm;
using sandpool::fuzz::require;

namespace {

[[noreturn]] void die(const char* step, const Error& error) {
  std::fprintf(stderr, "host_call fuzzer: %s: %s\n", step, error.describe().c_str());
  std::abort();
}

template <typename T>
T valueOrDie(Expected<T> result, const char* step) {
  if (!result) die(step, result.error());
  return std::move(result.value());
}

// The smallest guest the layout accepts: one read+execute page holding the
// headers and a hlt, entered at the hlt. It never runs: it only gives the
// vCPU and the layout an image.
std::vector<uint8_t> minimalGuest() {
  std::vector<uint8_t> elf(sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr) + 1);
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_entry = SANDPOOL_IMAGE_BASE + elf.size() - 1;
  eh.e_phoff = sizeof eh;
  eh.e_ehsize = sizeof eh;
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 1;
  Elf64_Phdr ph{};
  ph.p_type = PT_LOAD;
  ph.p_flags = PF_R | PF_X;
  ph.p_vaddr = ph.p_paddr = SANDPOOL_IMAGE_BASE;
  ph.p_filesz = ph.p_memsz = elf.size();
  ph.p_align = kPageSize;
  std::memcpy(elf.data(), &eh, sizeof eh);
  std::memcpy(elf.data() + sizeof eh, &ph, sizeof ph);
  elf.back() = 0xf4;  // hlt
  return elf;
}

// A host function set like a client's: answers a call of one argument with
// that argument, strings and bytes twice over (so that a reply can outgrow
// the buffer its request fit in); refuses any other call.
class DoublingHostFunctions final : public HostFunctions {
 public:
  Expected<Value> callHostFunction(std::string_view name, std::span<const Value> args) override {
    if (args.size() != 1)
      return makeError(ErrorKind::kBadArguments, std::string(name) + " takes one argument");
    Value reply = args[0];
    std::visit(
        [](auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, Bytes>) {
            const T once = v;
            v.insert(v.end(), once.begin(), once.end());
          }
        },
        reply);
    return reply;
  }
};

// One VM's worth of state, built once: the fuzz loop only rewrites the
// host-call buffer.
struct HostCallFixture {
  HostCallFixture()
      : config(fuzzConfig()),
        image(valueOrDie(GuestImage::parse(minimalGuest(), config), "parsing the minimal guest")),
        layout(valueOrDie(computeLayout(image, config), "computing the layout")),
        memfd(::memfd_create("sandpool-fuzz", MFD_CLOEXEC)),
        memory(mapMemory(memfd, config)),
        backend(makeEmulatedBackend()),
        vcpu(valueOrDie(backend->createMicroVm(memory, layout, image.entry()),
                        "creating the emulated vCPU")) {}

  static VmConfig fuzzConfig() {
    VmConfig config;
    config.memory_size = 8 * kMiB;
    config.host_call_size = kPageSize;  // libFuzzer's inputs (4096 bytes at most) can fill it
    config.max_output_bytes = 1024;     // so print() truncates too
    return config;
  }
  static GuestMemory mapMemory(const UniqueFd& fd, const VmConfig& config) {
    if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(config.memory_size)) != 0) {
      std::perror("host_call fuzzer: guest memory memfd");
      std::abort();
    }
    return valueOrDie(GuestMemory::mapShared(fd.get(), config.memory_size), "mapping guest memory");
  }

  VmConfig config;
  GuestImage image;
  MemoryLayout layout;
  UniqueFd memfd;
  GuestMemory memory;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<MicroVm> vcpu;
  DoublingHostFunctions host_functions;
};

void checkReply(const HostCallFixture& vm) {
  auto area = valueOrDie(
      vm.memory.view(vm.layout.host_call_addr, vm.layout.host_call_size, "reply"), "reading");
  sandpool_result_header header;
  std::memcpy(&header, area.data(), sizeof header);
  require(header.magic == SANDPOOL_RESULT_MAGIC, "a served host call leaves a result header");
  require(header.status == SANDPOOL_STATUS_OK || header.status == SANDPOOL_STATUS_ERROR,
          "the status is OK or ERROR");
  require(header.size <= area.size() - sizeof header, "the reply fits the host-call buffer");
  if (header.status != SANDPOOL_STATUS_OK) return;
  std::span<const uint8_t> payload = area.subspan(sizeof header, header.size);
  auto value = decodeValue(payload);
  require(value.ok() && payload.empty(), "an OK reply is exactly one encoded value");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static HostCallFixture vm;
  std::vector<uint8_t> request(vm.layout.host_call_size, 0);
  std::memcpy(request.data(), data, std::min<size_t>(size, request.size()));
  if (auto written = vm.memory.write(vm.layout.host_call_addr, request, "host-call request");
      !written) {
    die("writing the request", written.error());
  }
  vm.memory.clearHostDirty();

  GuestSession session(GuestSession::Phase::kCall, vm.memory, vm.layout, vm.config, *vm.vcpu,
                       &vm.host_functions);
  const PortAction action = session.onPortOut(SANDPOOL_PORT_HOST_CALL, static_cast<uint32_t>(size));
  require(session.output().size() <= vm.config.max_output_bytes,
          "print() output stays within its limit");
  if (action == PortAction::kResume) {
    checkReply(vm);
  } else {
    auto failure = session.failure(RunExit{}, std::chrono::seconds(1));
    require(failure && failure->kind == ErrorKind::kBadHostCall,
            "a refused host call stops the call as bad host call");
  }
  return 0;
}
