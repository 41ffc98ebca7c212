/* The part of WASI preview 1 a function needs, for imports from
 * "wasi_snapshot_preview1" (docs/wasm.md lists it). Every other WASI
 * preview 1 function a module imports is generated as a stub returning an
 * errno (wasm/glue_writer.cpp). Addresses are checked against linear memory; a
 * bad one is EFAULT, never a trap. */
#include <sandpool/wasm_bridge.h>
#include <string.h>

typedef struct Z_wasi_snapshot_preview1_instance_t wasi_instance;

enum {
  kErrnoSuccess = 0,
  kErrnoBadf = 8,
  kErrnoFault = 21,
  kErrnoInval = 28,
  kErrnoIo = 29,
  kErrnoNotsup = 58,
  kClockProcessCputime = 2,
  kClockThreadCputime = 3,
  kFiletypeCharacterDevice = 2,
  kRightFdWrite = 1 << 6,
};

struct Z_wasi_snapshot_preview1_instance_t sandpool_wasm_wasi;

/* The `size` bytes at `address` of linear memory, or NULL when outside it. */
static uint8_t* linear(const wasi_instance* wasi, uint32_t address, uint64_t size) {
  const wasm_rt_memory_t* memory = wasi->memory;
  if (!memory || (uint64_t)address + size > memory->size) return 0;
  return memory->data + address;
}

static uint32_t store_u32(const wasi_instance* wasi, uint32_t address, uint32_t value) {
  uint8_t* target = linear(wasi, address, 4);
  if (!target) return kErrnoFault;
  memcpy(target, &value, 4);
  return kErrnoSuccess;
}

static int is_output(uint32_t fd) { return fd == 1 || fd == 2; }

uint32_t Z_wasi_snapshot_preview1Z_fd_write(wasi_instance* wasi, uint32_t fd, uint32_t iovs,
                                            uint32_t iov_count, uint32_t written_at) {
  if (!is_output(fd)) return kErrnoBadf;
  const uint8_t* vectors = linear(wasi, iovs, (uint64_t)iov_count * 8);
  if (!vectors) return kErrnoFault;
  uint32_t written = 0;
  for (uint32_t i = 0; i < iov_count; i++) {
    uint32_t base, size;
    memcpy(&base, vectors + 8 * i, 4);
    memcpy(&size, vectors + 8 * i + 4, 4);
    const uint8_t* bytes = linear(wasi, base, size);
    if (!bytes) return kErrnoFault;
    sandpool_print_n((const char*)bytes, size);
    written += size;
  }
  return store_u32(wasi, written_at, written);
}

uint32_t Z_wasi_snapshot_preview1Z_fd_fdstat_get(wasi_instance* wasi, uint32_t fd,
                                                 uint32_t stat_at) {
  if (!is_output(fd)) return kErrnoBadf;
  uint8_t* stat = linear(wasi, stat_at, 24);
  if (!stat) return kErrnoFault;
  memset(stat, 0, 24);
  stat[0] = kFiletypeCharacterDevice;
  uint64_t rights = kRightFdWrite;
  memcpy(stat + 8, &rights, 8);
  return kErrnoSuccess;
}

/* A splitmix64 stream keyed by the call's entropy. It is re-keyed whenever
 * the entropy changes, so a stream started during initialisation (and kept
 * in the snapshot) never carries into a call. */
static uint8_t stream_key[32];
static uint64_t stream_state;

static uint64_t next_random(void) {
  const uint8_t* entropy = sandpool_call_entropy();
  if (memcmp(stream_key, entropy, sizeof stream_key) != 0) {
    memcpy(stream_key, entropy, sizeof stream_key);
    uint64_t words[4];
    memcpy(words, entropy, sizeof words);
    stream_state = words[0] ^ words[1] ^ words[2] ^ words[3];
  }
  uint64_t z = (stream_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint32_t Z_wasi_snapshot_preview1Z_random_get(wasi_instance* wasi, uint32_t buffer, uint32_t size) {
  uint8_t* target = linear(wasi, buffer, size);
  if (!target) return kErrnoFault;
  for (uint32_t i = 0; i < size; i += 8) {
    uint64_t word = next_random();
    memcpy(target + i, &word, size - i < 8 ? size - i : 8);
  }
  return kErrnoSuccess;
}

/* Realtime and monotonic are the host's clocks, read by a host call when
 * asked (so time passes within a call); WASI's ids for them (0, 1) are the
 * guest ABI's. The CPU-time clocks are not kept. */
uint32_t Z_wasi_snapshot_preview1Z_clock_time_get(wasi_instance* wasi, uint32_t clock,
                                                  uint64_t precision, uint32_t time_at) {
  (void)precision;
  if (clock == kClockProcessCputime || clock == kClockThreadCputime) return kErrnoNotsup;
  if (clock != SANDPOOL_CLOCK_REALTIME && clock != SANDPOOL_CLOCK_MONOTONIC) return kErrnoInval;
  uint8_t* target = linear(wasi, time_at, 8);
  if (!target) return kErrnoFault;
  sandpool_value which = {.type = SANDPOOL_TYPE_U32, .u32 = clock};
  sandpool_value now;
  if (sandpool_host_call(SANDPOOL_HOST_CLOCK, &which, 1, &now) != 0 ||
      now.type != SANDPOOL_TYPE_U64) {
    return kErrnoIo;
  }
  memcpy(target, &now.u64, 8);
  return kErrnoSuccess;
}

static uint32_t store_two_zeros(wasi_instance* wasi, uint32_t first_at, uint32_t second_at) {
  uint32_t result = store_u32(wasi, first_at, 0);
  return result != kErrnoSuccess ? result : store_u32(wasi, second_at, 0);
}

uint32_t Z_wasi_snapshot_preview1Z_args_sizes_get(wasi_instance* wasi, uint32_t count_at,
                                                  uint32_t size_at) {
  return store_two_zeros(wasi, count_at, size_at);
}
uint32_t Z_wasi_snapshot_preview1Z_environ_sizes_get(wasi_instance* wasi, uint32_t count_at,
                                                     uint32_t size_at) {
  return store_two_zeros(wasi, count_at, size_at);
}
/* No arguments and no environment: nothing to write. */
uint32_t Z_wasi_snapshot_preview1Z_args_get(wasi_instance* wasi, uint32_t argv, uint32_t buffer) {
  (void)wasi, (void)argv, (void)buffer;
  return kErrnoSuccess;
}
uint32_t Z_wasi_snapshot_preview1Z_environ_get(wasi_instance* wasi, uint32_t environ,
                                               uint32_t buffer) {
  (void)wasi, (void)environ, (void)buffer;
  return kErrnoSuccess;
}

void Z_wasi_snapshot_preview1Z_proc_exit(wasi_instance* wasi, uint32_t code) {
  (void)wasi;
  char message[48] = "module called proc_exit(";
  char digits[12];
  int n = 0;
  do digits[n++] = (char)('0' + code % 10);
  while ((code /= 10) != 0);
  size_t at = strlen(message);
  while (n) message[at++] = digits[--n];
  message[at++] = ')';
  message[at] = 0;
  sandpool_wasm_abort("exit", message);
}
