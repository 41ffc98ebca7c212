// The KVM backend: micro-VMs on /dev/kvm, driven by ioctls directly.
// docs/kvm.md describes how it works.
#pragma once

#include <memory>

#include "vm/backend.h"
#include "vm/kvm/kvm_device.h"

namespace sandpool::vm::kvm {

class KvmBackend final : public Backend {
 public:
  explicit KvmBackend(std::shared_ptr<const KvmDevice> device, int kick_signal);

  std::string openingReport() const override { return self_test_report_; }
  BackendKind kind() const override { return BackendKind::kKvm; }
  Expected<void> prepareImage(std::span<uint8_t> image, const MemoryLayout& layout) override;
  Expected<std::unique_ptr<MicroVm>> createMicroVm(GuestMemory& memory, const MemoryLayout& layout,
                                                   uint64_t entry) override;

  const KvmDevice& device() const { return *device_; }

 private:
  std::shared_ptr<const KvmDevice> device_;
  int kick_signal_;
  std::string self_test_report_;

  friend Expected<std::unique_ptr<Backend>> makeKvmBackendAt(const char*, const KvmOptions&);
};

// makeKvmBackend() on another device node; tests use it to check the errors.
// Both open the device, check its API and capabilities, and run the
// self-test (self_test.h) before returning a backend.
Expected<std::unique_ptr<Backend>> makeKvmBackendAt(const char* device_path,
                                                    const KvmOptions& options = {});

}  // namespace sandpool::vm::kvm
