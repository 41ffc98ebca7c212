// misbehave: one export per way a guest can go wrong. The host must turn
// each into its typed error and serve the next call on the same VM.
#include <sandpool/guest.hpp>
#include <stdio.h>
#include <string.h>

#include "../runtime/runtime.h"

// The code write_code() tries to overwrite (kept out of the anonymous
// namespace so that the compiler emits it even though it is never called).
extern "C" __attribute__((noinline, used)) int32_t sandpool_test_code_target(int32_t a) {
  return a * 3;
}

// Privileged instructions sit at these labels (defined by the asm below), so
// that the host can check the rip a fault reports (site_of returns them).
extern "C" char sandpool_test_wrmsr_site[], sandpool_test_rdmsr_site[], sandpool_test_cr0_site[],
    sandpool_test_cr3_site[], sandpool_test_jump_site[];

namespace {

volatile uint64_t sink;

void spin() {
  for (;;) sink = sink + 1;
}

uint64_t read_null() { return *reinterpret_cast<volatile uint64_t*>(sink); }

void write_null() { *reinterpret_cast<volatile uint64_t*>(sink) = 42; }

uint64_t recurse(uint64_t depth) {
  volatile uint8_t frame[512];
  frame[0] = uint8_t(depth);
  return recurse(depth + 1) + frame[0];
}

void stack_overflow() { sink = recurse(0); }

void write_code() {
  auto* code = reinterpret_cast<volatile uint8_t*>(&sandpool_test_code_target);
  code[0] = 0xc3;
}

void alloc_past_heap() {
  for (;;) sink = reinterpret_cast<uint64_t>(new uint8_t[1 << 20]);
}

void write_past_heap() {
  auto* end = reinterpret_cast<volatile uint8_t*>(sandpool_boot()->heap_end);
  end[0] = 1;
}

// A host call whose header claims a name far larger than the buffer.
void bad_host_call() {
  auto* header = reinterpret_cast<sandpool_host_call_header*>(sandpool_boot()->host_call_addr);
  header->magic = SANDPOOL_HOST_CALL_MAGIC;
  header->name_size = 0x7fffffff;
  header->arg_count = 1;
  header->args_size = 0;
  sandpool_out(SANDPOOL_PORT_HOST_CALL, 0xffffffff);
}

void unknown_port() { sandpool_out(0x1234, 0); }

void explicit_abort() { sandpool_abort("the guest gave up"); }

int32_t divide(int32_t a, int32_t b) { return a / b; }

void halt() { __asm__ volatile("hlt"); }

int32_t fail_with(sandpool::str message) {
  char text[128];
  snprintf(text, sizeof text, "refused: %.*s", int(message.size), message.data);
  sandpool_fail(text);
  return 0;
}

uint8_t big[2 << 20];

sandpool::bytes huge_result() { return {big, sizeof big}; }

void print_flood(uint32_t lines) {
  for (uint32_t i = 0; i < lines; i++) printf("line %u of a long flood of output\n", i);
}

// Calls a host function nobody provides; returns the error the guest saw.
sandpool::str call_missing_host_function() {
  sandpool_value result;
  if (sandpool_host_call("no_such_function", nullptr, 0, &result) == 0) return {"succeeded", 9};
  const char* error = sandpool_host_error();
  return {error, uint32_t(strlen(error))};
}

void host_call_storm() {
  for (;;) sandpool_print("x");
}

// Aborts with a message the host must read from guest memory at `address`:
// the host may only read what the guest itself can.
void abort_with_message_at(uint64_t address, uint64_t size) {
  sandpool_abort_with(SANDPOOL_ABORT_EXPLICIT, reinterpret_cast<const char*>(address), size);
}

__attribute__((noinline)) void write_msr(uint32_t index, uint64_t value) {
  __asm__ volatile("sandpool_test_wrmsr_site: wrmsr"
                   :
                   : "c"(index), "a"(uint32_t(value)), "d"(uint32_t(value >> 32))
                   : "memory");
}

__attribute__((noinline)) uint64_t read_msr(uint32_t index) {
  uint32_t low, high;
  __asm__ volatile("sandpool_test_rdmsr_site: rdmsr" : "=a"(low), "=d"(high) : "c"(index));
  return uint64_t{high} << 32 | low;
}

__attribute__((noinline)) void write_cr0(uint64_t value) {
  __asm__ volatile("sandpool_test_cr0_site: mov %0, %%cr0" : : "r"(value) : "memory");
}

__attribute__((noinline)) uint64_t read_cr3() {
  uint64_t value;
  __asm__ volatile("mov %%cr3, %0" : "=r"(value));
  return value;
}

__attribute__((noinline)) void write_cr3(uint64_t value) {
  __asm__ volatile("sandpool_test_cr3_site: mov %0, %%cr3" : : "r"(value) : "memory");
}

// Writes CR0 (meant: without WP), then the code write_code() is refused;
// returns what the patched function computes (3 * 5 unpatched).
int32_t write_cr0_then_code(uint64_t value) {
  write_cr0(value);
  auto* code = reinterpret_cast<volatile uint8_t*>(&sandpool_test_code_target);
  // mov eax, 7; ret
  const uint8_t patch[] = {0xb8, 7, 0, 0, 0, 0xc3};
  for (size_t i = 0; i < sizeof patch; i++) code[i] = patch[i];
  int32_t (*volatile target)(int32_t) = &sandpool_test_code_target;
  return target(5);
}

__attribute__((noinline)) void jump_to(uint64_t target) {
  __asm__ volatile("sandpool_test_jump_site: jmp *%0" : : "r"(target) : "memory");
}

uint64_t site_of(sandpool::str name) {
  const struct {
    const char* name;
    const char* address;
  } sites[] = {{"wrmsr", sandpool_test_wrmsr_site},
               {"rdmsr", sandpool_test_rdmsr_site},
               {"cr0", sandpool_test_cr0_site},
               {"cr3", sandpool_test_cr3_site},
               {"jump", sandpool_test_jump_site}};
  for (const auto& site : sites) {
    if (strlen(site.name) == name.size && memcmp(site.name, name.data, name.size) == 0) {
      return reinterpret_cast<uint64_t>(site.address);
    }
  }
  sandpool_fail("no such site");
  return 0;
}

// Aborts with the caller's bytes as its message: line feeds, 0xff, anything.
void abort_with(sandpool::bytes message) {
  sandpool_abort_with(SANDPOOL_ABORT_EXPLICIT, reinterpret_cast<const char*>(message.data),
                      message.size);
}

// Fails the call with an error message as large as the output buffer,
// written by hand, as a guest without the SDK may: the message repeats a
// line feed, a forged log line and a byte that is not UTF-8.
void fail_filling_output() {
  const sandpool_boot_info* boot = sandpool_boot();
  auto* header = reinterpret_cast<sandpool_result_header*>(boot->output_addr);
  auto* text = reinterpret_cast<uint8_t*>(header + 1);
  const uint32_t size = uint32_t(boot->output_size - sizeof *header);
  static const char kPattern[] =
      "\n2026-01-01T00:00:00.000 info event=login tenant=beta peer=forged \xff";
  for (uint32_t i = 0; i < size; i++) text[i] = uint8_t(kPattern[i % (sizeof kPattern - 1)]);
  *header = {SANDPOOL_RESULT_MAGIC, SANDPOOL_STATUS_ERROR, size, 0};
  sandpool_out(SANDPOOL_PORT_DONE, uint32_t(boot->output_size));
}

}  // namespace

void sandpool_main() {
  sandpool::export_function<spin>("spin");
  sandpool::export_function<read_null>("read_null");
  sandpool::export_function<write_null>("write_null");
  sandpool::export_function<stack_overflow>("stack_overflow");
  sandpool::export_function<write_code>("write_code");
  sandpool::export_function<alloc_past_heap>("alloc_past_heap");
  sandpool::export_function<write_past_heap>("write_past_heap");
  sandpool::export_function<bad_host_call>("bad_host_call");
  sandpool::export_function<unknown_port>("unknown_port");
  sandpool::export_function<explicit_abort>("explicit_abort");
  sandpool::export_function<divide>("divide");
  sandpool::export_function<halt>("halt");
  sandpool::export_function<fail_with>("fail_with");
  sandpool::export_function<huge_result>("huge_result");
  sandpool::export_function<print_flood>("print_flood");
  sandpool::export_function<call_missing_host_function>("call_missing_host_function");
  sandpool::export_function<host_call_storm>("host_call_storm");
  sandpool::export_function<abort_with_message_at>("abort_with_message_at");
  sandpool::export_function<write_msr>("write_msr");
  sandpool::export_function<read_msr>("read_msr");
  sandpool::export_function<write_cr0>("write_cr0");
  sandpool::export_function<read_cr3>("read_cr3");
  sandpool::export_function<write_cr3>("write_cr3");
  sandpool::export_function<write_cr0_then_code>("write_cr0_then_code");
  sandpool::export_function<jump_to>("jump_to");
  sandpool::export_function<site_of>("site_of");
  sandpool::export_function<abort_with>("abort_with");
  sandpool::export_function<fail_filling_output>("fail_filling_output");
}
