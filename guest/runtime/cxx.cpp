// C++ support for guests: operator new/delete over the guest heap. An
// allocation that cannot be satisfied ends the call with an out-of-memory
// abort (there are no exceptions in guests).
#include <sandpool/guest.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

namespace {

void* allocate_or_abort(size_t size) {
  void* p = malloc(size ? size : 1);
  if (!p) {
    static const char message[] = "operator new: guest heap exhausted";
    sandpool_abort_with(SANDPOOL_ABORT_OUT_OF_MEMORY, message, sizeof message - 1);
  }
  return p;
}

}  // namespace

void* operator new(size_t size) { return allocate_or_abort(size); }
void* operator new[](size_t size) { return allocate_or_abort(size); }
void operator delete(void* p) noexcept { free(p); }
void operator delete[](void* p) noexcept { free(p); }
void operator delete(void* p, size_t) noexcept { free(p); }
void operator delete[](void* p, size_t) noexcept { free(p); }

extern "C" void __cxa_pure_virtual() { sandpool_abort("pure virtual function called"); }
