// What the server knows about one client connection while it is open:
// whether it has logged in, when it last moved a message and how many of
// its calls are unanswered. The connection's message stream
// (GuardedMessageStream) and its bootstrap capability (SandpoolImpl) write
// it; the listener reads it to decide when to close the connection (login
// deadline, idle timeout) and which connection to evict at the global cap.
//
// Refcounted because the bootstrap capability may outlive the listener's
// record of the connection by a turn of the event loop.
//
// Thread: the KJ thread only.
#pragma once

#include <cstdint>

#include <kj/refcount.h>
#include <kj/time.h>

namespace sandpool::server {

struct ConnectionStatus : public kj::Refcounted {
  explicit ConnectionStatus(kj::TimePoint now) : last_message(now) {}

  bool logged_in = false;
  // The last message read from or written to the peer.
  kj::TimePoint last_message;
  // Bootstrap and Call messages of the peer that have no Return yet.
  uint64_t calls_unanswered = 0;
  // The largest message read from the peer, in bytes.
  uint64_t largest_message_bytes = 0;
};

}  // namespace sandpool::server
