#include "vm/guest_view.h"

#include <string>

#include <fmt/format.h>

namespace sandpool::vm {

Expected<void> GuestView::check(uint64_t addr, uint64_t len, uint8_t access,
                                std::string_view what) const {
  // Built only on failure: host calls pass here twice each.
  auto refuse = [&](const std::string& why) {
    return makeError(ErrorKind::kGuestFault,
                     fmt::format("{} [{}, +{}){}", what, toHex(addr), len, why));
  };
  const uint64_t last = addr + len - 1;
  if (last < addr) return refuse(" wraps around the address space");
  // Walks the regions the range crosses: adjacent regions (the image, the
  // buffers, the heap) may be read across.
  for (uint64_t at = addr;;) {
    const Region* region = layout_.regionAt(at);
    if (!region || (region->access & access) != access) {
      return refuse(fmt::format(": {} ({}) is not {} by the guest", toHex(at), layout_.describe(at),
                                (access & kAccessWrite ? "writable" : "readable")));
    }
    if (last < region->end()) return {};
    at = region->end();
  }
}

Expected<std::span<const uint8_t>> GuestView::read(uint64_t addr, uint64_t len,
                                                   std::string_view what) const {
  if (len == 0) return std::span<const uint8_t>();
  if (auto checked = check(addr, len, kAccessRead, what); !checked) return checked.takeError();
  return memory_.view(addr, len, what);
}

Expected<void> GuestView::write(uint64_t addr, std::span<const uint8_t> data,
                                std::string_view what) {
  if (data.empty()) return {};
  if (auto checked = check(addr, data.size(), kAccessWrite, what); !checked)
    return checked.takeError();
  return memory_.write(addr, data, what);
}

}  // namespace sandpool::vm
