#include "server/call_metrics.h"

namespace sandpool::server {

size_t outcomeSlot(const pool::CallOutcome& outcome, bool cancelled) {
  if (outcome.refusal) {
    if (outcome.refusal->kind == pool::RefusalKind::kCancelled) return kOutcomeCancelled;
    return outcomeSlot(failureCode(outcome.refusal->kind));
  }
  if (outcome.call.result.ok()) return kOutcomeOk;
  if (cancelled) return kOutcomeCancelled;
  return outcomeSlot(failureCode(outcome.call.result.error().kind));
}

void GuestMetrics::record(const pool::CallOutcome& outcome, bool cancelled,
                          std::chrono::nanoseconds total_time) {
  ++calls[outcomeSlot(outcome, cancelled)];
  total.add(total_time);
  // A refused call never reached a VM: it has no queue, run or reset time.
  if (outcome.refusal) return;
  queue.add(outcome.queue_time);
  run.add(outcome.call.stats.run_time);
  reset.add(outcome.call.stats.reset_time);
  host_calls += outcome.call.stats.host_calls;
}

}  // namespace sandpool::server
