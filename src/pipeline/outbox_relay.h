// OutboxRelay: moves events from the metadata store's outbox to the event bus (Kafka), in outbox
// order, and marks them sent only after the bus confirmed them (publish() returned: Kafka's
// delivery report). A crash between the two publishes the unmarked rows again at the next start;
// consumers are idempotent, so the observable result is unchanged (at-least-once).
//
// While the bus is down the relay retries the first unsent row with exponential back-off
// (initial_backoff doubling up to max_backoff) and never skips it, so per-key order holds and
// uploads keep being accepted into the outbox; it catches up once the bus is back (a publish
// against a dead cluster itself blocks for the bus's publish timeout). It looks for
// new rows when notify() is called (e.g. from the store's commit listener) and at least every
// idle_poll (rows written by other processes).
//
// Several relays (one per process) may share a metadata store: pending_outbox() claims rows for a
// lease that outlasts a publish, renewed every round, and never takes rows past another relay's
// claim, so each row is normally published by one relay and outbox order holds across relays. A
// relay that dies leaves its rows to the others when the lease runs out (they may then be
// published a second time if it died after publishing and before marking them sent).
//
// Ownership: references the store, the bus and the metrics; all must outlive the relay.
// Thread-safety: start()/stop() from one owning thread; notify() and the accessors from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "bus/event_bus.h"
#include "common/metrics.h"
#include "store/metadata_store.h"

namespace deeplens {

struct OutboxRelayOptions {
  int batch = 256;                                  // rows read (and marked sent) per round
  std::chrono::milliseconds idle_poll{200};         // look for rows this often without notify()
  std::chrono::milliseconds initial_backoff{100};   // after a failed publish or store read
  std::chrono::milliseconds max_backoff{5000};
  // How long claimed rows stay this relay's. Must outlast one publish_batch (KafkaBus: the
  // message timeout, 10 s, plus its 2 s margin) with room to spare; a dead relay's rows wait this
  // long for another relay.
  std::chrono::milliseconds lease{30000};
  std::string relay_id;  // unique per relay; empty = a random one
};

class OutboxRelay {
 public:
  OutboxRelay(MetadataStore& store, EventBus& bus, Metrics& metrics, OutboxRelayOptions options = {});
  ~OutboxRelay();
  OutboxRelay(const OutboxRelay&) = delete;
  OutboxRelay& operator=(const OutboxRelay&) = delete;

  Status start();
  // Finishes the row in flight (publish and mark), then stops; rows left stay in the outbox.
  void stop();
  // New rows are waiting: look now instead of at the next idle_poll.
  void notify();

  int64_t published() const { return published_; }
  // True while the last publish attempt failed (the bus is down).
  bool backing_off() const { return backing_off_; }

 private:
  void run();
  // One round: publishes pending rows until one fails; returns rows published or an error.
  Result<int> relay_pending();
  // Sleeps up to timeout; returns early on stop(), and on notify() when until_notified.
  void wait(std::chrono::milliseconds timeout, bool until_notified);

  MetadataStore& store_;
  EventBus& bus_;
  Metrics& metrics_;
  OutboxRelayOptions options_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool notified_ = false;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> backing_off_{false};
  std::atomic<int64_t> published_{0};
};

}  // namespace deeplens
