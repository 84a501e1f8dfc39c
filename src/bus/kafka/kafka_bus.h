// KafkaBus: the EventBus on Apache Kafka through librdkafka (the at-scale backend).
//
//  - publish(): an idempotent producer (enable.idempotence=true, acks=all); the message key is the
//    OutboxMessage key (imageId) and its headers (eventType, eventVersion, correlationId, tenantId)
//    become Kafka record headers. publish() returns only after the delivery report, i.e. once all
//    in-sync replicas have the message; a failed or timed-out report is kUnavailable.
//  - subscribe(): one librdkafka consumer per Consumer, in the consumer group options.group, with
//    auto-commit and auto offset store off: offsets are committed only by Consumer::commit(), after
//    the caller's effect (at-least-once).
//  - start() makes sure the configured topics exist (Admin API CreateTopics with the configured
//    partitions and replication factor; TOPIC_ALREADY_EXISTS is fine). When the admin API fails or
//    is not available (librdkafka's mock cluster does not implement CreateTopics), it logs that and
//    relies on the broker creating topics on first use (auto.create.topics.enable).
//
// Rebalances (documented contract): partition.assignment.strategy defaults to the eager
// "range,roundrobin" protocol. A rebalance callback only runs inside Consumer::poll(); the
// StageRunner commits what it finished before it polls again, so when a partition is revoked
// nothing of it is in flight in the runner. Messages of a revoked partition that were fetched in
// the same poll() call are dropped from the batch, and positions of revoked partitions are
// forgotten: whatever was not committed is delivered again to the partition's next owner. Setting
// kafka.partition.assignment.strategy=cooperative-sticky switches to the incremental protocol,
// which the callback also handles.
//
// Ownership: KafkaBus owns its producer, an admin/metadata handle and one cached consumer handle
// per group asked about in lag(). Consumers it hands out own their librdkafka consumer and must be
// destroyed (or closed) before the bus.
// Thread-safety: KafkaBus is thread-safe. A Consumer is used by one thread, except wake(), which
// any thread may call.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bus/event_bus.h"

// librdkafka's handle, forward-declared so this header stays light (STYLE.md: no heavy headers).
typedef struct rd_kafka_s rd_kafka_t;

namespace deeplens {

struct KafkaBusOptions {
  // bootstrap.servers, e.g. "broker1:9092,broker2:9092". Required.
  std::string bootstrap_servers;
  // client.id prefix of every client this bus creates (consumers append "-<group>").
  std::string client_id = "deeplens";

  // Settings passed straight to librdkafka (config keys `kafka.<name>`), applied after our
  // defaults so they override them: security.protocol, sasl.mechanisms, sasl.username,
  // ssl.ca.location, session.timeout.ms, ... `settings` goes to every client;
  // `producer_settings` / `consumer_settings` (config `kafka.producer.<name>` /
  // `kafka.consumer.<name>`) only to that kind of client, so consumer-only properties do not make
  // the producer warn.
  std::map<std::string, std::string> settings;
  std::map<std::string, std::string> producer_settings;
  std::map<std::string, std::string> consumer_settings;

  // Topics made sure of at start() and their layout when this bus creates them.
  std::vector<std::string> topics;
  int partitions = 8;          // per topic: the upper bound on consumers sharing one stage
  int replication_factor = 3;  // use 1 for a single-broker cluster
  std::chrono::milliseconds admin_timeout{5000};  // CreateTopics / metadata at start()

  // How long publish() waits for the delivery report; also librdkafka's message.timeout.ms, so a
  // message that publish() gave up on is not delivered later behind the caller's back.
  std::chrono::milliseconds publish_timeout{10000};
  std::chrono::milliseconds ping_timeout{2000};   // ping() and lag() requests

  // Defaults that matter for latency (each can be overridden through `settings`):
  //  - linger.ms = 1: publish() is synchronous, so batching longer only adds latency (librdkafka's
  //    own default is 5).
  //  - fetch.wait.max.ms = 100: how long a broker holds an empty fetch. A real broker answers as
  //    soon as data arrives, so this only bounds idle traffic; librdkafka's mock cluster always
  //    waits the full time, so use 1-10 ms against it (dev-kafka, tests). librdkafka default: 500.
  //  - fetch.error.backoff.ms = 100 (default 500): how soon a consumer retries after a fetch error.
  //  - socket.nagle.disable = true.
  //  - session.timeout.ms / heartbeat.interval.ms keep librdkafka's defaults (45000 / 3000):
  //    a dead member's partitions move after about session.timeout.ms; tests use ~6000 / 1000.
  //  - reconnect.backoff.max.ms keeps its default (10000); tests use ~1000.
  //  - partitioner = murmur2_random: the same partition for a key as the Java client.
};

class KafkaBus final : public EventBus {
 public:
  // Does not connect; start() does.
  explicit KafkaBus(KafkaBusOptions options);
  ~KafkaBus() override;
  KafkaBus(const KafkaBus&) = delete;
  KafkaBus& operator=(const KafkaBus&) = delete;

  // Constructs and starts.
  static Result<std::unique_ptr<KafkaBus>> open(KafkaBusOptions options);

  // Creates the producer, starts its delivery-report thread and makes sure the topics exist.
  // kInvalidArgument for a bad setting; kUnavailable when the cluster cannot be reached.
  Status start();
  // Flushes outstanding messages (up to publish_timeout), stops the delivery-report thread and
  // destroys the clients. Idempotent. Consumers must be gone first.
  void stop();

  Status publish(const OutboxMessage& message) override;
  PublishOutcome publish_batch(std::span<const OutboxMessage> messages) override;
  Result<std::unique_ptr<Consumer>> subscribe(const ConsumerOptions& options) override;
  // Sum over the topics' partitions of (high watermark - committed offset of the group), with
  // the low watermark standing in for a partition the group never committed.
  Result<int64_t> lag(const std::string& group, const std::vector<std::string>& topics) override;
  // Cluster metadata answered within ping_timeout.
  Status ping() override;

  const KafkaBusOptions& options() const { return options_; }
  // True when start() could not create the topics through the admin API (they are auto-created).
  bool topics_auto_created() const { return topics_auto_created_; }

 private:
  Status ensure_topics();
  void serve_delivery_reports();
  Result<rd_kafka_t*> lag_handle(const std::string& group);

  KafkaBusOptions options_;
  rd_kafka_t* producer_ = nullptr;
  std::thread poller_;
  std::atomic<bool> stopping_{false};
  bool topics_auto_created_ = false;
  std::mutex lag_mu_;
  std::map<std::string, rd_kafka_t*> lag_handles_;  // group -> unsubscribed consumer handle
};

// The topics the cluster has (metadata within `timeout`), without creating any: for `deeplens
// doctor`. kUnavailable when the cluster cannot be reached, naming the bootstrap servers.
Result<std::vector<std::string>> kafka_cluster_topics(const KafkaBusOptions& options, std::chrono::milliseconds timeout);

}  // namespace deeplens
