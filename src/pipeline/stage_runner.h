// StageRunner: runs one pipeline stage as `members` consumer threads of one group. Each thread
// polls a bounded batch, hands it to the handler, commits what the handler finished, and rewinds
// what it did not (delivered again after a back-off). Nothing is committed before its effect.
//
// A stage with `lanes` (one topic per priority) subscribes to all of them and fills each batch
// from bounded per-lane queues by weight (pipeline/lane_scheduler.h); a full lane's topic is
// paused while the thread keeps polling the others.
//
// stop() asks the threads to finish the batch in hand, wakes blocked polls, joins the threads and
// leaves the group; uncommitted messages are redelivered to whoever consumes next.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "bus/event_bus.h"
#include "common/metrics.h"
#include "pipeline/lane_scheduler.h"

namespace deeplens {

class StageHandler {
 public:
  virtual ~StageHandler() = default;
  // Handles a batch in order and returns how many leading messages are done (effects durable);
  // the rest are retried. Business failures (a bad image, a failing model) are "done": the
  // handler records them as failure events. Only infrastructure trouble returns < size.
  virtual size_t handle(std::span<const BusMessage> batch) = 0;
};

struct StageRunnerOptions {
  std::string stage;            // "orchestrate", "extract", ... (logs and metrics)
  ConsumerOptions consumer;     // group, topics, max_batch
  int members = 1;              // consumer threads
  std::chrono::milliseconds poll_timeout{1000};
  std::chrono::milliseconds retry_backoff{500};  // after an infrastructure failure
  // Lanes by priority, highest first; when set they are the consumer's topics. Empty: one FIFO
  // over consumer.topics.
  std::vector<LaneSpec> lanes;
};

class StageRunner {
 public:
  StageRunner(EventBus& bus, StageHandler& handler, Metrics& metrics, StageRunnerOptions options);
  ~StageRunner();

  Status start();
  void stop();

 private:
  void run(Consumer& consumer);
  // Handles one batch: commits what the handler finished, rewinds the rest (and forgets what the
  // lanes hold of the rewound partitions).
  void process(Consumer& consumer, const std::vector<BusMessage>& batch, LaneScheduler& lanes);

  EventBus& bus_;
  StageHandler& handler_;
  Metrics& metrics_;
  StageRunnerOptions options_;
  std::atomic<bool> stopping_{false};
  std::vector<std::unique_ptr<Consumer>> consumers_;
  std::vector<std::thread> threads_;
};

}  // namespace deeplens
