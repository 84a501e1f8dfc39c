#include "bus/kafka/dev_broker.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <algorithm>

#include "common/log.h"

namespace deeplens {
namespace {

Status mock_status(rd_kafka_resp_err_t err, const std::string& what) {
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return {};
  return Error(ErrorCode::kInvalidArgument, what + ": " + rd_kafka_err2str(err));
}

}  // namespace

Result<std::unique_ptr<DevKafkaBroker>> DevKafkaBroker::start(const DevKafkaBrokerOptions& options) {
  if (options.brokers < 1) return Error(ErrorCode::kInvalidArgument, "the dev broker needs at least one broker");
  std::unique_ptr<DevKafkaBroker> broker(new DevKafkaBroker(options));
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // The host handle never connects anywhere; quiet its "no bootstrap.servers" warning.
  rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
  broker->host_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!broker->host_) {
    rd_kafka_conf_destroy(conf);
    return Error(ErrorCode::kInternal, std::string("cannot create the dev broker's host handle: ") + err);
  }
  broker->cluster_ = rd_kafka_mock_cluster_new(broker->host_, options.brokers);
  if (!broker->cluster_) return Error(ErrorCode::kIoError, "cannot start librdkafka's mock cluster");
  broker->bootstrap_ = rd_kafka_mock_cluster_bootstraps(broker->cluster_);
  const int replication = std::clamp(options.replication_factor, 1, options.brokers);
  for (const auto& t : options.topics)
    if (auto st = broker->create_topic(t, options.partitions, replication); !st) return std::move(st).error();
  log_info("dev_kafka.started", {{"bootstrap", broker->bootstrap_}, {"brokers", options.brokers},
                                 {"topics", static_cast<long long>(options.topics.size())}});
  return broker;
}

DevKafkaBroker::~DevKafkaBroker() { stop(); }

void DevKafkaBroker::stop() {
  if (cluster_) rd_kafka_mock_cluster_destroy(cluster_);
  cluster_ = nullptr;
  if (host_) rd_kafka_destroy(host_);
  host_ = nullptr;
}

Status DevKafkaBroker::create_topic(const std::string& topic, int partitions, int replication_factor) {
  if (!cluster_) return Error(ErrorCode::kFailedPrecondition, "the dev broker is stopped");
  return mock_status(rd_kafka_mock_topic_create(cluster_, topic.c_str(), partitions, replication_factor),
                     "cannot create topic " + topic);
}

Status DevKafkaBroker::set_broker_down(int broker_id) {
  if (!cluster_) return Error(ErrorCode::kFailedPrecondition, "the dev broker is stopped");
  return mock_status(rd_kafka_mock_broker_set_down(cluster_, broker_id), "broker down");
}

Status DevKafkaBroker::set_broker_up(int broker_id) {
  if (!cluster_) return Error(ErrorCode::kFailedPrecondition, "the dev broker is stopped");
  return mock_status(rd_kafka_mock_broker_set_up(cluster_, broker_id), "broker up");
}

Status DevKafkaBroker::set_partition_leader(const std::string& topic, int partition, int broker_id) {
  if (!cluster_) return Error(ErrorCode::kFailedPrecondition, "the dev broker is stopped");
  return mock_status(rd_kafka_mock_partition_set_leader(cluster_, topic.c_str(), partition, broker_id),
                     "cannot move the leader of " + topic);
}

Status DevKafkaBroker::set_broker_rtt(int broker_id, std::chrono::milliseconds rtt) {
  if (!cluster_) return Error(ErrorCode::kFailedPrecondition, "the dev broker is stopped");
  return mock_status(rd_kafka_mock_broker_set_rtt(cluster_, broker_id, static_cast<int>(rtt.count())), "broker rtt");
}

void DevKafkaBroker::push_request_errors(int api_key, int count, int error_code) {
  if (!cluster_ || count <= 0) return;
  std::vector<rd_kafka_resp_err_t> errors(static_cast<size_t>(count), static_cast<rd_kafka_resp_err_t>(error_code));
  rd_kafka_mock_push_request_errors_array(cluster_, static_cast<int16_t>(api_key), errors.size(), errors.data());
}

}  // namespace deeplens
