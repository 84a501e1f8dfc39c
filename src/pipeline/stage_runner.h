// StageRunner: runs one pipeline stage as `members` consumer threads of one group. Each thread
// polls a bounded batch, hands it to the handler, commits what the handler finished, and rewinds
// what it did not (delivered again after a back-off). Nothing is committed before its effect.
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
};

class StageRunner {
 public:
  StageRunner(EventBus& bus, StageHandler& handler, Metrics& metrics, StageRunnerOptions options);
  ~StageRunner();

  Status start();
  void stop();

 private:
  void run(Consumer& consumer);

  EventBus& bus_;
  StageHandler& handler_;
  Metrics& metrics_;
  StageRunnerOptions options_;
  std::atomic<bool> stopping_{false};
  std::vector<std::unique_ptr<Consumer>> consumers_;
  std::vector<std::thread> threads_;
};

}  // namespace deeplens
