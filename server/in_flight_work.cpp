#include "server/in_flight_work.h"

namespace sandpool::server {

WorkGuard InFlightWork::begin() {
  ++count_;
  cue_.signal();
  return WorkGuard(*this);
}

void InFlightWork::end() {
  cue_.signal();
  if (--count_ == 0 && shutting_down_) {
    KJ_IF_MAYBE (f, idle_) {
      (*f)->fulfill();
    }
    idle_ = nullptr;
  }
}

kj::Promise<void> InFlightWork::shutdown() {
  shutting_down_ = true;
  if (count_ == 0) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  idle_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

}  // namespace sandpool::server
