// Uploaded guests on disk: <data dir>/guests/<tenant>/<guest>.guest, the
// pool settings a tenant chose for it in <guest>.settings, and the VM
// settings it chose in <guest>.vm.
//
// Each file is "SPGUEST1", the SHA-256 of the ELF (32 bytes), then the ELF.
// save() is atomic and durable: it writes a temporary file, fsyncs it,
// renames it over the final name and fsyncs the directory, so after a crash
// a guest is either the old file, the new one, or absent if it was never
// acknowledged. load() checks the digest, so a corrupted file is refused.
// A crash between the first write and the rename leaves the temporary file
// (".<file>.tmp" beside it); removeStaleTemporaries() deletes those at the
// next start.
//
// Threads: any; calls for the same guest must not overlap (the server
// serialises uploads of a name).
#pragma once

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "pool/guest_pool.h"
#include "server/vm_settings.h"
#include "vm/error.h"

namespace sandpool::server {

std::string sha256Hex(std::span<const uint8_t> data);

class GuestStore {
 public:
  explicit GuestStore(std::filesystem::path root);

  vm::Expected<void> save(const std::string& tenant, const std::string& guest,
                          std::span<const uint8_t> elf) const;
  // Deletes the guest and its settings.
  vm::Expected<void> remove(const std::string& tenant, const std::string& guest) const;

  // Pool settings set with configure(), written atomically like guests.
  vm::Expected<void> saveSettings(const std::string& tenant, const std::string& guest,
                                  pool::PoolSettings settings) const;
  // Nothing if the guest has none stored (or they cannot be read).
  std::optional<pool::PoolSettings> loadSettings(const std::string& tenant,
                                                 const std::string& guest) const;

  // VM settings chosen at upload or with configure (0: not chosen), written
  // atomically like guests.
  vm::Expected<void> saveVmSettings(const std::string& tenant, const std::string& guest,
                                    const VmSettings& settings) const;
  // None chosen (all 0) if the guest has none stored; an error if they
  // cannot be read, so that a guest never boots with settings it did not
  // choose.
  vm::Expected<VmSettings> loadVmSettings(const std::string& tenant,
                                          const std::string& guest) const;

  struct Stored {
    std::string guest;
    std::vector<uint8_t> elf;
    std::string sha256;
  };
  // The stored guests of `tenant`, sorted by name. A file that cannot be read
  // or fails its digest is left in place and described in `errors`.
  std::vector<Stored> loadAll(const std::string& tenant, std::vector<std::string>& errors) const;
  // One stored guest, checked as loadAll() checks it.
  vm::Expected<Stored> load(const std::string& tenant, const std::string& guest) const;

  struct StaleTemporary {
    std::filesystem::path path;
    uint64_t bytes = 0;
    std::optional<std::string> error;  // why it is still there
  };
  // Deletes the temporary files of writes that a crash cut short, in every
  // tenant's directory (tenants no longer configured included), and says
  // which. Files modified at or after `started` are left alone: they may be
  // this process's own uploads in progress.
  std::vector<StaleTemporary> removeStaleTemporaries(std::filesystem::file_time_type started) const;

 private:
  vm::Expected<void> writeAtomically(const std::string& tenant, const std::string& name,
                                     std::initializer_list<std::span<const uint8_t>> parts) const;

  std::filesystem::path root_;
};

}  // namespace sandpool::server
