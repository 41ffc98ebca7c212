#include "wasm/translator_service.h"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "wasm/module.h"

extern char** environ;

namespace sandpool::wasm {

namespace {

using vm::ErrorKind;
using vm::UniqueFd;

constexpr uint32_t kProtocol = 0x73707731;  // "spw1"
constexpr size_t kMaxMessage = 2048;        // an error's text, cut to fit

struct Request {
  uint32_t protocol;
};

struct Reply {
  uint32_t protocol;
  uint32_t ok;
  uint32_t kind;  // vm::ErrorKind when !ok
  char message[kMaxMessage];
};

vm::Error internal(const std::string& what) {
  return vm::makeError(ErrorKind::kInternal,
                       fmt::format("wasm translator: {}: {}", what, std::strerror(errno)));
}

// Sends `bytes` with up to two descriptors attached.
bool sendWithFds(int socket, const void* bytes, size_t size, std::initializer_list<int> fds) {
  iovec iov{const_cast<void*>(bytes), size};
  alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
  std::copy(fds.begin(), fds.end(), reinterpret_cast<int*>(CMSG_DATA(cmsg)));
  if (fds.size() == 0) {
    msg.msg_control = nullptr;
    msg.msg_controllen = 0;
  }
  ssize_t sent;
  do {
    sent = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  return sent == static_cast<ssize_t>(size);
}

// Receives one message into `bytes`, and the descriptors that came with it
// (owned). The size received, 0 at end of stream, -1 on error.
ssize_t receiveWithFds(int socket, void* bytes, size_t size, std::vector<UniqueFd>& fds) {
  iovec iov{bytes, size};
  alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t got;
  do {
    got = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
  } while (got < 0 && errno == EINTR);
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); got >= 0 && cmsg != nullptr;
       cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const int* received = reinterpret_cast<const int*>(CMSG_DATA(cmsg));
    for (size_t i = 0; i < count; ++i) fds.emplace_back(received[i]);
  }
  return got;
}

vm::Expected<UniqueFd> memfdWith(std::span<const uint8_t> bytes, const char* name) {
  UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
  if (!fd.valid()) return internal("memfd_create");
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return internal("writing a memfd");
    done += static_cast<size_t>(n);
  }
  return fd;
}

vm::Expected<std::vector<uint8_t>> readAll(int fd, uint64_t max_size) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return internal("fstat");
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > max_size) {
    return vm::makeError(
        ErrorKind::kLimitExceeded,
        fmt::format("wasm translator: {} bytes exceed the limit of {}", size, max_size));
  }
  std::vector<uint8_t> bytes(size);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, bytes.data() + done, size - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return internal("reading a memfd");
    done += static_cast<size_t>(n);
  }
  return bytes;
}

// In the per-module child: translates and replies. Never returns.
[[noreturn]] void translateOne(int module_fd, int reply_fd, const Toolchain& toolchain,
                               const TranslationLimits& limits) {
  // The translator ignores SIGCHLD to reap these children; this one waits
  // for its tools and needs their exit status, which an ignored SIGCHLD
  // would discard (waitpid fails with ECHILD).
  ::signal(SIGCHLD, SIG_DFL);
  Reply reply{};
  reply.protocol = kProtocol;
  UniqueFd image_fd;
  auto module = readAll(module_fd, limits.max_module_size);
  vm::Expected<std::vector<uint8_t>> image =
      module ? translateModule(*module, toolchain, limits)
             : vm::Expected<std::vector<uint8_t>>(module.takeError());
  if (image) {
    auto fd = memfdWith(*image, "sandpool-wasm-guest");
    if (fd) {
      image_fd = std::move(*fd);
      reply.ok = 1;
    } else {
      image = fd.takeError();
    }
  }
  if (!reply.ok) {
    reply.kind = static_cast<uint32_t>(image.error().kind);
    const std::string& text = image.error().message;
    std::memcpy(reply.message, text.data(), std::min(text.size(), kMaxMessage - 1));
  }
  const bool sent = reply.ok ? sendWithFds(reply_fd, &reply, sizeof reply, {image_fd.get()})
                             : sendWithFds(reply_fd, &reply, sizeof reply, {});
  ::_exit(sent ? 0 : 1);
}

}  // namespace

vm::Expected<std::unique_ptr<TranslatorService>> TranslatorService::start(
    const std::string& program, const std::string& service_flag, const std::string& user,
    const std::string& sdk_dir) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0)
    return internal("socketpair");
  UniqueFd ours(pair[0]), theirs(pair[1]);
  // The child's end as descriptor 3, without close-on-exec; nothing else
  // of this process is inherited (every other descriptor is close-on-exec).
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, theirs.get(), 3);
  const std::string fd_arg = "3";
  std::vector<char*> argv = {
      const_cast<char*>("sandpool-wasm-translator"), const_cast<char*>(service_flag.c_str()),
      const_cast<char*>(fd_arg.c_str()), const_cast<char*>(user.c_str()),
      const_cast<char*>(sdk_dir.c_str()),   nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    errno = rc;
    return internal(fmt::format("starting {}", program));
  }
  return std::unique_ptr<TranslatorService>(new TranslatorService(std::move(ours), pid));
}

TranslatorService::~TranslatorService() {
  // Closing our end ends its loop; its children finish their module.
  socket_.reset();
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

vm::Expected<std::vector<uint8_t>> TranslatorService::translate(std::span<const uint8_t> module,
                                                                std::chrono::milliseconds timeout) {
  auto module_fd = memfdWith(module, "sandpool-wasm-module");
  if (!module_fd) return module_fd.takeError();
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0)
    return internal("socketpair");
  UniqueFd reply(pair[0]), reply_theirs(pair[1]);
  const Request request{kProtocol};
  if (!sendWithFds(socket_.get(), &request, sizeof request,
                   {module_fd->get(), reply_theirs.get()})) {
    return internal("sending a module to the translator process");
  }
  // Only the translator holds the other end now: if it dies, the read
  // below sees the end of the stream.
  reply_theirs.reset();
  pollfd ready{reply.get(), POLLIN, 0};
  int polled;
  do {
    polled = ::poll(&ready, 1, static_cast<int>(timeout.count()));
  } while (polled < 0 && errno == EINTR);
  if (polled == 0) {
    return vm::makeError(ErrorKind::kLimitExceeded,
                         fmt::format("wasm translator: no reply within {} ms", timeout.count()));
  }
  Reply answer{};
  std::vector<UniqueFd> fds;
  const ssize_t got = receiveWithFds(reply.get(), &answer, sizeof answer, fds);
  if (got != static_cast<ssize_t>(sizeof answer) || answer.protocol != kProtocol) {
    return vm::makeError(ErrorKind::kInternal,
                         "wasm translator: the translator process gave no reply");
  }
  if (!answer.ok) {
    answer.message[kMaxMessage - 1] = '\0';
    const auto kind = answer.kind <= static_cast<uint32_t>(ErrorKind::kInternal)
                          ? static_cast<ErrorKind>(answer.kind)
                          : ErrorKind::kInternal;
    return vm::makeError(kind, answer.message);
  }
  if (fds.size() != 1)
    return vm::makeError(ErrorKind::kInternal, "wasm translator: a reply without its image");
  return readAll(fds[0].get(), TranslationLimits{}.max_image_size);
}

vm::Expected<std::vector<uint8_t>> TranslatorService::guestImageFromUpload(
    std::vector<uint8_t> bytes) {
  if (!isWasmModule(bytes)) return bytes;
  const TranslationLimits limits;
  if (bytes.size() > limits.max_module_size) {
    return vm::makeError(ErrorKind::kInvalidGuest,
                         fmt::format("wasm module: {} bytes exceeds the limit of {}", bytes.size(),
                                     limits.max_module_size));
  }
  // Each of the two tools may take its whole time; the rest is slack.
  return translate(bytes, 2 * limits.max_time + std::chrono::seconds(30));
}

int serveTranslations(int socket_fd, const Toolchain& toolchain, const TranslationLimits& limits) {
  // Children end on their own; nobody waits for them.
  ::signal(SIGCHLD, SIG_IGN);
  UniqueFd socket(socket_fd);
  for (;;) {
    Request request{};
    std::vector<UniqueFd> fds;
    const ssize_t got = receiveWithFds(socket.get(), &request, sizeof request, fds);
    if (got == 0) return 0;
    if (got < 0) return 1;
    if (got != static_cast<ssize_t>(sizeof request) || request.protocol != kProtocol ||
        fds.size() != 2)
      continue;
    const pid_t child = ::fork();
    if (child == 0) {
      socket.reset();
      translateOne(fds[0].get(), fds[1].get(), toolchain, limits);
    }
    // On a failed fork the reply socket closes here, and the caller sees
    // no reply.
  }
}

}  // namespace sandpool::wasm
