#include "vm/kvm/kvm_backend.h"

#include "vm/kvm/kvm_micro_vm.h"
#include "vm/kvm/page_tables.h"
#include "vm/kvm/self_test.h"
#include "vm/kvm/vcpu_kick.h"

namespace sandpool::vm {
namespace kvm {

KvmBackend::KvmBackend(std::shared_ptr<const KvmDevice> device, int kick_signal)
    : device_(std::move(device)), kick_signal_(kick_signal) {}

Expected<void> KvmBackend::prepareImage(std::span<uint8_t> image, const MemoryLayout& layout) {
  auto built = buildPageTables(image, layout);
  if (!built) return built.takeError();
  return {};
}

Expected<std::unique_ptr<MicroVm>> KvmBackend::createMicroVm(GuestMemory& memory,
                                                             const MemoryLayout& layout,
                                                             uint64_t entry) {
  auto vcpu = KvmMicroVm::create(*device_, kick_signal_, memory, layout, entry);
  if (!vcpu) return vcpu.takeError();
  return std::unique_ptr<MicroVm>(std::move(*vcpu));
}

Expected<std::unique_ptr<Backend>> makeKvmBackendAt(const char* device_path,
                                                    const KvmOptions& options) {
  auto device = KvmDevice::open(device_path);
  if (!device) return device.takeError();
  auto signal = installKickSignal();
  if (!signal) return signal.takeError();
  auto backend = std::make_unique<KvmBackend>(std::move(*device), *signal);
  auto tested = runSelfTest(*backend, options);
  if (!tested) return tested.takeError();
  backend->self_test_report_ = std::move(*tested);
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace kvm

Expected<std::unique_ptr<Backend>> makeKvmBackend(const KvmOptions& options) {
  return kvm::makeKvmBackendAt(kvm::kKvmDevicePath, options);
}

}  // namespace sandpool::vm
