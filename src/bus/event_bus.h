// EventBus: topics of keyed messages with consumer groups and at-least-once delivery.
//
//  - publish() returns once the message is durable (sqlite_log: committed; Kafka: acknowledged by
//    all in-sync replicas).
//  - A Consumer belongs to a group; the members of one group split a topic's partitions, so each
//    message is handled by one member, and messages with the same key (imageId) stay in order.
//  - Delivery is at-least-once: a member commits a message after its handler's effect; messages
//    not committed when a member stops or dies are delivered again (to it or to another member).
//
// Implementations: sqlite_log/ (embedded) and kafka/.
// Thread-safety: EventBus is thread-safe. A Consumer is used by one thread, except wake(), which
// any thread may call to interrupt a blocked poll().
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "store/metadata_store.h"  // Headers, OutboxMessage

namespace deeplens {

struct BusMessage {
  std::string topic;
  int partition = 0;
  int64_t offset = 0;
  std::string key;
  std::string payload;
  Headers headers;
  Timestamp timestamp;

  std::string header(std::string_view name) const {
    for (const auto& [k, v] : headers)
      if (k == name) return v;
    return {};
  }
};

struct ConsumerOptions {
  std::string group;                // consumer group id, e.g. "deeplens.extract"
  std::vector<std::string> topics;  // subscribed topics
  size_t max_batch = 16;            // upper bound on messages returned by one poll (bounded in-flight)
  // A broadcast consumer shares no group: it reads every partition of its topics from the end (what
  // is published after subscribe() returns), keeps its position in memory only, and commit() does
  // nothing. For listeners that every process runs (the real-time hub), not for stages.
  bool broadcast = false;
};

class Consumer {
 public:
  virtual ~Consumer() = default;
  // Up to options.max_batch messages from this member's partitions, waiting at most `timeout` for
  // the first one. An empty result is normal (nothing new, or woken).
  virtual Result<std::vector<BusMessage>> poll(std::chrono::milliseconds timeout) = 0;
  // Marks msg and everything before it in its partition as done for this group.
  virtual Status commit(const BusMessage& msg) = 0;
  // Delivers msg (and what follows it in its partition) again on the next poll: for a handler
  // that could not finish a batch and will retry.
  virtual void rewind(const BusMessage& msg) = 0;
  // Stops (paused = true) or restarts fetching this member's partitions of `topic`, for flow
  // control: the member keeps its partitions and must keep calling poll(), which returns nothing
  // of a paused topic; a resumed topic goes on after the last message poll() returned (or from a
  // rewind). Messages already returned are unaffected.
  virtual void pause(const std::string& topic, bool paused) = 0;
  // Makes a blocked or the next poll() return promptly (used by stop()).
  virtual void wake() = 0;
  // Leaves the group; uncommitted messages will be delivered again.
  virtual void close() = 0;
};

// What publish_batch() got through: the first `delivered` messages are durable; when that is fewer
// than all, `status` says why the next one was not.
struct PublishOutcome {
  size_t delivered = 0;
  Status status;
};

class EventBus {
 public:
  virtual ~EventBus() = default;
  virtual Status publish(const OutboxMessage& message) = 0;
  // Publishes the messages in order and returns once they are durable (or one failed). A bus that
  // can have several in flight (Kafka) waits once for all instead of once per message; this
  // default publishes one at a time. Messages after a failed one may have been delivered too
  // (they are reported as not delivered and will be published again: at-least-once).
  virtual PublishOutcome publish_batch(std::span<const OutboxMessage> messages);
  virtual Result<std::unique_ptr<Consumer>> subscribe(const ConsumerOptions& options) = 0;
  // Lag (unconsumed messages) of a group over its topics; -1 when unknown.
  virtual Result<int64_t> lag(const std::string& group, const std::vector<std::string>& topics) = 0;
  virtual Status ping() = 0;
};

}  // namespace deeplens
