// DevKafkaBroker: a Kafka-protocol cluster for development and tests, built on librdkafka's mock
// cluster (rdkafka_mock.h) and running inside this process on 127.0.0.1 with random ports.
//
// NOT FOR PRODUCTION. It keeps everything in memory and loses it all when the process exits;
// it keeps only about 5 MB per partition and silently drops older messages; it does not implement
// the CreateTopics admin API (create topics here with create_topic(), or let producers
// auto-create them with 4 partitions); an empty fetch waits the full fetch.wait.max.ms (use
// 1-10 ms in clients); a group rebalance waits about the members' session.timeout.ms.
// `deeplens dev-kafka` runs one of these as a standalone process.
//
// Ownership: owns the mock cluster and the librdkafka handle that hosts it; both go at stop().
// Thread-safety: all methods may be called from any thread (librdkafka's mock API is).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

typedef struct rd_kafka_s rd_kafka_t;
typedef struct rd_kafka_mock_cluster_s rd_kafka_mock_cluster_t;

namespace deeplens {

struct DevKafkaBrokerOptions {
  int brokers = 3;                  // broker ids are 1..brokers
  std::vector<std::string> topics;  // created at start
  int partitions = 8;               // per topic created at start
  int replication_factor = 3;       // capped at `brokers`
};

class DevKafkaBroker {
 public:
  // Starts the mock cluster and creates the topics.
  static Result<std::unique_ptr<DevKafkaBroker>> start(const DevKafkaBrokerOptions& options);
  ~DevKafkaBroker();
  DevKafkaBroker(const DevKafkaBroker&) = delete;
  DevKafkaBroker& operator=(const DevKafkaBroker&) = delete;

  // Destroys the cluster: connected clients see every broker go away. Idempotent.
  void stop();

  // "127.0.0.1:PORT,127.0.0.1:PORT,..." for bootstrap.servers.
  const std::string& bootstrap_servers() const { return bootstrap_; }
  int brokers() const { return options_.brokers; }

  Status create_topic(const std::string& topic, int partitions, int replication_factor);
  // Fault injection for tests: a broker that is down closes its connections and refuses new ones.
  Status set_broker_down(int broker_id);
  Status set_broker_up(int broker_id);
  Status set_partition_leader(const std::string& topic, int partition, int broker_id);
  // A slow broker: every response from broker_id is delayed by rtt (0 = normal again).
  Status set_broker_rtt(int broker_id, std::chrono::milliseconds rtt);
  // The next `count` requests of Kafka API `api_key` (e.g. 0 = Produce, 1 = Fetch, 8 =
  // OffsetCommit) fail with Kafka error code `error_code`.
  void push_request_errors(int api_key, int count, int error_code);

 private:
  explicit DevKafkaBroker(const DevKafkaBrokerOptions& options) : options_(options) {}

  DevKafkaBrokerOptions options_;
  rd_kafka_t* host_ = nullptr;  // the handle the mock cluster lives on
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
  std::string bootstrap_;
};

}  // namespace deeplens
