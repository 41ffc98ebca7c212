// Wasm translation out of sandpoold's process: a translator process,
// started before sandpoold restricts itself (its system-call filter forbids
// creating processes and executing programs), parses each module and runs
// the tools (translator.h) in a child of its own per module. sandpoold keeps
// nothing of a module but the guest ELF that comes back; a module that
// crashed the parser would crash only that child.
//
// The protocol, over a Unix SOCK_SEQPACKET socket pair: a request is one
// message carrying two descriptors, a memfd with the module and a socket for
// the reply; the reply is one message (a status, an error kind and text)
// carrying, on success, a memfd with the guest ELF. The process ends when
// sandpoold closes its end.
//
// Threads: translate() from any thread, concurrently (each request has its
// own reply socket); the caller bounds how many run at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <sys/types.h>

#include "vm/error.h"
#include "vm/unique_fd.h"
#include "wasm/translator.h"

namespace sandpool::wasm {

class TranslatorService {
 public:
  // Starts `program` (sandpoold itself, /proc/self/exe) with the argument
  // `service_flag`, the descriptor number of its end of the socket pair,
  // `user` (empty: none), the user it changes to before it serves, and
  // `sdk_dir`, the Wasm SDK folder it translates against.
  static vm::Expected<std::unique_ptr<TranslatorService>> start(const std::string& program,
                                                                const std::string& service_flag,
                                                                const std::string& user,
                                                                const std::string& sdk_dir);
  ~TranslatorService();
  TranslatorService(const TranslatorService&) = delete;
  TranslatorService& operator=(const TranslatorService&) = delete;

  // The guest ELF for `module`, or the translator's typed error; kInternal
  // if the process is gone or gives no reply within `timeout`.
  vm::Expected<std::vector<uint8_t>> translate(std::span<const uint8_t> module,
                                               std::chrono::milliseconds timeout);

  // What an upload becomes: a Wasm module (by its magic) is translated,
  // anything else returned as it is, for the ELF checks.
  vm::Expected<std::vector<uint8_t>> guestImageFromUpload(std::vector<uint8_t> bytes);

 private:
  TranslatorService(vm::UniqueFd socket, pid_t pid) : socket_(std::move(socket)), pid_(pid) {}

  vm::UniqueFd socket_;
  pid_t pid_;
};

// The translator process's loop, on the descriptor its parent passed: serves
// requests until the parent closes its end. Returns the process's exit code.
int serveTranslations(int socket_fd, const Toolchain& toolchain = defaultToolchain(),
                      const TranslationLimits& limits = {});

}  // namespace sandpool::wasm
