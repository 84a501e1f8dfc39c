// The embedded event bus: an append-only log per topic inside the metadata SQLite database.
//
// Layout: each topic has `partitions` partitions; a message goes to partition hash(key) % n and
// gets the partition's next offset. Consumer groups keep a committed offset per partition.
// Members of a group register in the database with a heartbeat; live members (heartbeat within
// member_timeout) split the partitions round-robin by member id, so several threads or processes
// can share a topic while per-key order holds. During a membership change two members may briefly
// both read a partition (at-least-once; handlers are idempotent).
//
// Wake-ups: an append wakes this process's waiting consumers when its transaction commits;
// other processes' messages are noticed within `cross_process_poll` (no busy polling).
// Retention: trim() deletes a message once every group that has joined the topic committed past it
// AND it is older than `retention` (like Kafka's retention.ms), so a group that joins later (a new
// stage, a thumbnail worker started tomorrow) still finds the last `retention` of messages. A group
// joining for the first time starts at the oldest message still stored (auto.offset.reset=earliest).
//
// Thread-safe. The SqliteDatabase must outlive the bus and its consumers.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "bus/event_bus.h"
#include "common/ids.h"
#include "store/sqlite/sqlite_database.h"

namespace deeplens {

struct SqliteLogOptions {
  int partitions = 8;                                               // per topic
  std::chrono::milliseconds member_timeout{10000};                  // a silent member leaves the group
  std::chrono::milliseconds heartbeat_interval{2000};
  std::chrono::milliseconds cross_process_poll{100};                // how soon other processes' events are seen
  std::chrono::milliseconds retention{std::chrono::hours(6)};       // bus.retention_s: kept at least this long
};

class SqliteLogBus final : public EventBus {
 public:
  static Result<std::unique_ptr<SqliteLogBus>> open(SqliteDatabase& db, const Clock& clock,
                                                    RandomSource& random, const SqliteLogOptions& options = {});
  ~SqliteLogBus() override;

  Status publish(const OutboxMessage& message) override;
  Result<std::unique_ptr<Consumer>> subscribe(const ConsumerOptions& options) override;
  Result<int64_t> lag(const std::string& group, const std::vector<std::string>& topics) override;
  Status ping() override;

  // Appends inside an open write transaction (the metadata store's outbox hook).
  Status append(SqliteConnection& c, const OutboxMessage& message);
  // Deletes messages consumed by every group and older than the retention; returns how many.
  Result<int64_t> trim();
  // Messages currently stored (all topics).
  Result<int64_t> stored_messages();

  int partition_for(std::string_view key) const;

  // Internal: used by consumers.
  uint64_t publish_seq();
  // Waits until a message was appended in this process since publish_seq() returned `seen`,
  // woken() is true, or timeout.
  void wait_for_publish(uint64_t seen, std::chrono::milliseconds timeout, const std::function<bool()>& woken);
  void notify_all();
  SqliteDatabase& db() { return db_; }
  const Clock& clock() const { return clock_; }
  const SqliteLogOptions& options() const { return options_; }
  IdGenerator& ids() { return ids_; }

 private:
  SqliteLogBus(SqliteDatabase& db, const Clock& clock, RandomSource& random, const SqliteLogOptions& options)
      : db_(db), clock_(clock), ids_(random), options_(options) {}

  SqliteDatabase& db_;
  const Clock& clock_;
  IdGenerator ids_;
  SqliteLogOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t publish_seq_ = 0;
};

}  // namespace deeplens
