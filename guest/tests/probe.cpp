// probe: exposes what a call can observe of the machine, so tests can check
// that nothing leaks between calls (registers, FPU/SSE state, memory) and
// that each call gets fresh entropy.
#include <sandpool/guest.hpp>
#include <string.h>

namespace {

uint8_t entropy_copy[32];

sandpool::bytes entropy() {
  memcpy(entropy_copy, sandpool_call_entropy(), sizeof entropy_copy);
  return {entropy_copy, sizeof entropy_copy};
}

void set_xmm15(double value) { __asm__ volatile("movq %0, %%xmm15" : : "r"(value) : "xmm15"); }

double get_xmm15() {
  double value;
  __asm__ volatile("movq %%xmm15, %0" : "=r"(value));
  return value;
}

void set_mxcsr_round_up() {
  uint32_t mxcsr = 0x1f80 | (2u << 13);
  __asm__ volatile("ldmxcsr %0" : : "m"(mxcsr));
}

uint32_t get_mxcsr() {
  uint32_t mxcsr;
  __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
  return mxcsr;
}

// A host call with arguments of every type: the host's `kv_get` style
// functions are reached through the same path.
sandpool::str call_host(sandpool::str name, sandpool::str argument) {
  static char reply[256];
  sandpool_value arg;
  arg.type = SANDPOOL_TYPE_STRING;
  arg.buf = {reinterpret_cast<const uint8_t*>(argument.data), argument.size};
  sandpool_value result;
  char fname[65];
  uint32_t n = name.size < 64 ? name.size : 64;
  memcpy(fname, name.data, n);
  fname[n] = 0;
  if (sandpool_host_call(fname, &arg, 1, &result) != 0) {
    sandpool_fail(sandpool_host_error());
    return {};
  }
  if (result.type != SANDPOOL_TYPE_STRING) {
    sandpool_fail("host function returned a non-string");
    return {};
  }
  uint32_t size = result.buf.size < sizeof reply ? result.buf.size : sizeof reply;
  memcpy(reply, result.buf.data, size);
  return {reply, size};
}

uint64_t heap_bytes() { return sandpool_boot()->heap_end - sandpool_boot()->heap_start; }

}  // namespace

void sandpool_main() {
  sandpool::export_function<entropy>("entropy");
  sandpool::export_function<set_xmm15>("set_xmm15");
  sandpool::export_function<get_xmm15>("get_xmm15");
  sandpool::export_function<set_mxcsr_round_up>("set_mxcsr_round_up");
  sandpool::export_function<get_mxcsr>("get_mxcsr");
  sandpool::export_function<call_host>("call_host");
  sandpool::export_function<heap_bytes>("heap_bytes");
}
