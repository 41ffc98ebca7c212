#include "tests/kvm/raw_guest.h"

#include <sys/mman.h>

#include <cstring>
#include <string>

#include "vm/x86.h"

namespace sandpool::vm::kvm::test {

// The programs, assembled into the test binary as data and copied into guest
// memory. Addresses inside them are absolute guest addresses (see
// raw_guest.h); jumps are relative, so the bytes run at kProgramAddr.
asm(R"(
  .pushsection .rodata.sandpool_raw_guests, "a"
  .intel_syntax noprefix

  .global raw_dispatcher_start, raw_dispatcher_end
raw_dispatcher_start:
  lgdt [0x600400]
  lidt [0x600410]
  mov edx, 0x5500
  out dx, eax
call_entry:
  mov rax, qword ptr [0x601000]
  mov rbx, qword ptr [0x601008]
  cmp rax, 0
  je cmd_counter
  cmp rax, 1
  je cmd_host_value
  cmp rax, 2
  je cmd_spin
  cmp rax, 3
  je cmd_read
  cmp rax, 4
  je cmd_write
  cmp rax, 5
  je cmd_execute
  cmp rax, 6
  je cmd_rdmsr
  cmp rax, 7
  je cmd_write_fs_base
  cmp rax, 8
  je cmd_fpu
  cmp rax, 9
  je cmd_debug_regs
  cmp rax, 10
  je cmd_cpuid
  cmp rax, 11
  je cmd_halt
  cmp rax, 12
  je cmd_triple_fault
  cmp rax, 13
  je cmd_dirty_pages
  cmp rax, 14
  je cmd_reports
  cmp rax, 15
  je cmd_in
  ud2

cmd_counter:
  mov rax, qword ptr [0x600000]
  inc rax
  mov qword ptr [0x600000], rax
  jmp done

cmd_host_value:
  mov rax, qword ptr [0x601010]
  jmp done

cmd_spin:
  mov edx, 0x5502
  out dx, eax
1:
  inc qword ptr [0x602000]
  jmp 1b

cmd_read:
  mov rax, qword ptr [rbx]
  jmp done

cmd_write:
  mov byte ptr [rbx], 1
  jmp done

cmd_execute:
  jmp rbx

cmd_rdmsr:
  mov ecx, ebx
  rdmsr
  mov edx, 0x5502
  out dx, eax
  jmp done

cmd_write_fs_base:
  mov ecx, 0xc0000100
  mov eax, ebx
  xor edx, edx
  wrmsr
  rdmsr
  mov edx, 0x5502
  out dx, eax
  jmp done

cmd_fpu:
  stmxcsr dword ptr [0x600008]
  mov eax, dword ptr [0x600008]
  mov edx, 0x5502
  out dx, eax
  movq rax, xmm5
  mov edx, 0x5502
  out dx, eax
  mov dword ptr [0x600008], 0x9fc0
  ldmxcsr dword ptr [0x600008]
  mov rax, 0x12345678
  movq xmm5, rax
  jmp done

cmd_debug_regs:
  mov rax, dr0
  mov edx, 0x5502
  out dx, eax
  mov rax, dr7
  mov edx, 0x5502
  out dx, eax
  mov rax, 0x1234
  mov dr0, rax
  mov eax, 0x30700
  mov dr7, rax
  jmp done

cmd_cpuid:
  mov eax, 1
  xor ecx, ecx
  cpuid
  mov eax, ecx
  mov edx, 0x5502
  out dx, eax
  mov eax, 0x80000001
  xor ecx, ecx
  cpuid
  mov eax, ecx
  mov edx, 0x5502
  out dx, eax
  mov eax, 7
  xor ecx, ecx
  cpuid
  mov eax, ebx
  mov edx, 0x5502
  out dx, eax
  jmp done

cmd_halt:
  hlt
  jmp done

cmd_triple_fault:
  lidt [0x600420]
  ud2

cmd_dirty_pages:
  mov rdi, 0x610000
2:
  test rbx, rbx
  jz done
  mov qword ptr [rdi], rbx
  add rdi, 0x1000
  dec rbx
  jmp 2b

cmd_reports:
  test rbx, rbx
  jz done
  mov edx, 0x5502
  out dx, eax
  dec rbx
  jmp cmd_reports

cmd_in:
  mov edx, 0x5500
  in eax, dx
  jmp done

done:
  mov edx, 0x5501
  out dx, eax
  ud2
raw_dispatcher_end:

  .global raw_back_to_back_start, raw_back_to_back_end
raw_back_to_back_start:
  lgdt [0x600400]
  lidt [0x600410]
  mov edx, 0x5500
  out dx, eax
  out dx, eax
  mov edx, 0x5599
  out dx, eax
  ud2
raw_back_to_back_end:

  # Exception stubs, 16 bytes apart: vector v at raw_stubs_start + 16 * v.
  .global raw_stubs_start, raw_stubs_end
  .balign 16
raw_stubs_start:
  .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
  .balign 16
  .if (\v == 8) || (\v >= 10 && \v <= 14) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
  push \v
  .else
  push 0
  push \v
  .endif
  jmp stub_common
  .endr
  .balign 16
stub_common:
  mov rax, qword ptr [rsp]
  mov rsi, qword ptr [rsp + 8]
  mov rdi, cr2
  mov r8, qword ptr [rsp + 16]
  mov edx, 0x5504
  out dx, eax
3:
  hlt
  jmp 3b
raw_stubs_end:

  .att_syntax prefix
  .popsection
)");

extern "C" const uint8_t raw_dispatcher_start[], raw_dispatcher_end[];
extern "C" const uint8_t raw_back_to_back_start[], raw_back_to_back_end[];
extern "C" const uint8_t raw_stubs_start[], raw_stubs_end[];

namespace {

constexpr uint64_t kGdtAddr = 0x600100;
constexpr uint64_t kIdtAddr = 0x600200;
constexpr uint64_t kGdtrAddr = 0x600400;
constexpr uint64_t kIdtrAddr = 0x600410;
constexpr uint64_t kEmptyIdtrAddr = 0x600420;
constexpr int kVectors = 32;

void put64(uint8_t* image, uint64_t addr, uint64_t value) {
  std::memcpy(image + addr, &value, sizeof(value));
}

void putTablePointer(uint8_t* image, uint64_t addr, uint16_t limit, uint64_t base) {
  std::memcpy(image + addr, &limit, sizeof(limit));
  std::memcpy(image + addr + 2, &base, sizeof(base));
}

// The guest's GDT (null, 64-bit code at x86::kSelectorCode, data at
// x86::kSelectorData) and an IDT sending
// every exception vector to its stub, on the current stack.
void writeCpuTables(uint8_t* image) {
  put64(image, kGdtAddr, 0);
  put64(image, kGdtAddr + 8, 0x00209a0000000000ull);
  put64(image, kGdtAddr + 16, 0x0000920000000000ull);
  for (int v = 0; v < kVectors; ++v) {
    const uint64_t handler = kStubsAddr + 16 * v;
    const uint64_t low = (handler & 0xffff) | (uint64_t{x86::kSelectorCode} << 16) |
                         (0x8eull << 40) | (((handler >> 16) & 0xffff) << 48);
    put64(image, kIdtAddr + 16 * v, low);
    put64(image, kIdtAddr + 16 * v + 8, handler >> 32);
  }
  putTablePointer(image, kGdtrAddr, 3 * 8 - 1, kGdtAddr);
  putTablePointer(image, kIdtrAddr, kVectors * 16 - 1, kIdtAddr);
  putTablePointer(image, kEmptyIdtrAddr, 0, 0);
}

MemoryLayout rawLayout() {
  MemoryLayout layout;
  layout.memory_size = kMemorySize;
  layout.boot_info_addr = 0x1000;
  layout.input_addr = kInputAddr;
  layout.input_size = kPageSize;
  layout.stack_top = kStackTop;
  layout.guard_addr = kStackAddr - kPageSize;
  layout.regions = {
      Region{0x1000, kPageSize, kAccessRead, "boot info"},
      Region{kProgramAddr, 2 * kPageSize, kAccessRead | kAccessExecute, "code"},
      Region{kDataAddr, kDataSize, kAccessRead | kAccessWrite, "data"},
      Region{kStackAddr, kStackTop - kStackAddr, kAccessRead | kAccessWrite, "stack"},
  };
  return layout;
}

}  // namespace

Expected<std::unique_ptr<RawImage>> RawImage::build(Backend& backend, Program program) {
  auto image = std::make_unique<RawImage>();
  image->layout_ = rawLayout();
  image->memfd_.reset(::memfd_create("sandpool-raw-guest", MFD_CLOEXEC));
  if (!image->memfd_.valid() || ::ftruncate(image->memfd_.get(), kMemorySize) != 0) {
    return makeError(ErrorKind::kInternal, "memfd for the raw guest image");
  }
  auto writable = Mapping::map(kMemorySize, PROT_READ | PROT_WRITE, MAP_SHARED, image->memfd_.get(),
                               "raw guest image");
  if (!writable) return writable.takeError();
  uint8_t* bytes = writable->data();
  if (auto prepared = backend.prepareImage(writable->bytes(), image->layout_); !prepared) {
    return prepared.takeError();
  }
  const uint8_t* start =
      program == Program::kDispatcher ? raw_dispatcher_start : raw_back_to_back_start;
  const uint8_t* end = program == Program::kDispatcher ? raw_dispatcher_end : raw_back_to_back_end;
  std::memcpy(bytes + kProgramAddr, start, end - start);
  std::memcpy(bytes + kStubsAddr, raw_stubs_start, raw_stubs_end - raw_stubs_start);
  writeCpuTables(bytes);
  auto contents = Mapping::map(kMemorySize, PROT_READ, MAP_SHARED, image->memfd_.get(),
                               "raw guest snapshot contents");
  if (!contents) return contents.takeError();
  image->contents_ = std::move(*contents);
  return image;
}

Expected<std::unique_ptr<RawVm>> RawVm::boot(Backend& backend, const RawImage& image) {
  auto memory = GuestMemory::mapPrivate(image.memfd(), kMemorySize, PROT_READ | PROT_WRITE);
  if (!memory) return memory.takeError();
  std::unique_ptr<RawVm> vm(new RawVm(std::move(*memory)));
  auto vcpu = backend.createMicroVm(vm->memory_, image.layout(), kProgramAddr);
  if (!vcpu) return vcpu.takeError();
  vm->vcpu_ = std::move(*vcpu);

  struct ReadyHandler : PortHandler {
    uint16_t port = 0;
    PortAction onPortOut(uint16_t p, uint32_t) override {
      port = p;
      return PortAction::kStop;
    }
  } ready;
  RunExit exit = vm->vcpu_->run(ready);
  if (exit.kind != RunExit::Kind::kStopped || ready.port != kPortReady) {
    return makeError(ErrorKind::kInternal, "raw guest did not reach READY: " + exit.reason +
                                               " port " + std::to_string(ready.port));
  }
  if (auto armed = vm->vcpu_->armReset(image.contents()); !armed) return armed.takeError();
  return vm;
}

Expected<void> RawVm::setInput(uint64_t command, uint64_t argument) {
  const uint64_t input[2] = {command, argument};
  return memory_.write(kInputAddr, {reinterpret_cast<const uint8_t*>(input), sizeof(input)},
                       "raw guest input");
}

}  // namespace sandpool::vm::kvm::test
