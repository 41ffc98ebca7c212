#include "server/kj_mailbox.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include <kj/debug.h>

namespace sandpool::server {

namespace {

int makeEventFd() {
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  KJ_SYSCALL(fd, "eventfd for the KJ mailbox");
  return fd;
}

}  // namespace

KjMailbox::KjMailbox(kj::UnixEventPort& port)
    : event_fd_(makeEventFd()),
      observer_(port, event_fd_.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ),
      queue_(1024) {}

KjMailbox::~KjMailbox() {
  Message* m = nullptr;
  while (queue_.pop(m)) delete m;
}

void KjMailbox::post(Message* message) {
  queue_.push(message);
  if (!signalled_.exchange(true)) {
    uint64_t one = 1;
    ssize_t n;
    do {
      n = ::write(event_fd_.get(), &one, sizeof one);
    } while (n < 0 && errno == EINTR);
  }
}

void KjMailbox::drain() {
  uint64_t count;
  while (::read(event_fd_.get(), &count, sizeof count) > 0) {
  }
  // Clear the flag before draining: a message pushed after this point either
  // is seen by the loop below or writes the eventfd again.
  signalled_.store(false);
  drainNow();
}

void KjMailbox::drainNow() {
  Message* m = nullptr;
  while (queue_.pop(m)) {
    m->deliver();
    delete m;
  }
}

bool KjMailbox::drainIfAny() {
  Message* m = nullptr;
  if (!queue_.pop(m)) return false;
  m->deliver();
  delete m;
  drainNow();
  return true;
}

void KjMailbox::endSpin() {
  signalled_.store(false);
  // A sender that saw the flag still set skipped the eventfd: whatever it
  // pushed before the store above is picked up here.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  drainNow();
}

kj::Promise<void> KjMailbox::run() {
  return observer_.whenBecomesReadable().then([this] {
    drain();
    return run();
  });
}

}  // namespace sandpool::server
