#include "bus/kafka/kafka_bus.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <set>

#include "common/ids.h"
#include "common/log.h"

namespace deeplens {
namespace {

using namespace std::chrono_literals;

int to_int_ms(std::chrono::milliseconds d) {
  return static_cast<int>(std::clamp<int64_t>(d.count(), 0, INT32_MAX));
}

// Applies settings in order; the first one librdkafka rejects is a kInvalidArgument.
Status apply_settings(rd_kafka_conf_t* conf, const std::vector<std::pair<std::string, std::string>>& settings) {
  char err[512];
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
      return Error(ErrorCode::kInvalidArgument, std::string("bad Kafka setting: ") + err)
          .with("setting", "kafka." + name);
  }
  return {};
}

void append(std::vector<std::pair<std::string, std::string>>& to, const std::map<std::string, std::string>& from) {
  for (const auto& kv : from) to.emplace_back(kv);
}

// librdkafka's syslog levels onto ours; its "info" (6) and below are chatty internals.
void on_log(const rd_kafka_t* rk, int level, const char* facility, const char* message) {
  const LogLevel ours = level <= 3 ? LogLevel::kError : level == 4 ? LogLevel::kWarn : level == 5 ? LogLevel::kInfo
                                                                                                  : LogLevel::kDebug;
  log(ours, "kafka.log", {{"client", rd_kafka_name(rk)}, {"facility", facility}, {"message", message}});
}

void on_error(rd_kafka_t* rk, int err, const char* reason, void*) {
  // librdkafka retries and reconnects by itself; these are for the operator.
  // One broker's connection coming and going is routine (info); all brokers down or anything
  // else is worth a warning.
  const auto code = static_cast<rd_kafka_resp_err_t>(err);
  const LogLevel level = code == RD_KAFKA_RESP_ERR__FATAL       ? LogLevel::kError
                         : code == RD_KAFKA_RESP_ERR__TRANSPORT ? LogLevel::kInfo
                                                                : LogLevel::kWarn;
  log(level, "kafka.error",
      {{"client", rd_kafka_name(rk)}, {"error", rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err))},
       {"reason", reason}});
}

// Owns an rd_kafka_conf_t until it is handed to rd_kafka_new().
struct ConfHolder {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  ~ConfHolder() {
    if (conf) rd_kafka_conf_destroy(conf);
  }
  Result<rd_kafka_t*> create(rd_kafka_type_t type) {
    char err[512];
    rd_kafka_t* rk = rd_kafka_new(type, conf, err, sizeof err);
    if (!rk) return Error(ErrorCode::kInvalidArgument, std::string("cannot create a Kafka client: ") + err);
    conf = nullptr;  // owned by rk now
    return rk;
  }
};

std::vector<std::pair<std::string, std::string>> common_settings(const KafkaBusOptions& o, const std::string& client_id) {
  return {
      {"bootstrap.servers", o.bootstrap_servers},
      {"client.id", client_id},
      {"socket.nagle.disable", "true"},
  };
}

std::vector<std::pair<std::string, std::string>> consumer_settings(const KafkaBusOptions& o, const std::string& group,
                                                                   const char* offset_reset = "earliest") {
  auto s = common_settings(o, o.client_id + "-" + group);
  s.insert(s.end(), {
                        {"group.id", group},
                        {"enable.auto.commit", "false"},
                        {"enable.auto.offset.store", "false"},
                        {"auto.offset.reset", offset_reset},
                        {"fetch.wait.max.ms", "100"},
                        {"fetch.error.backoff.ms", "100"},
                        {"partition.assignment.strategy", "range,roundrobin"},
                    });
  append(s, o.settings);
  append(s, o.consumer_settings);
  return s;
}

Result<rd_kafka_t*> new_consumer_handle(const KafkaBusOptions& o, const std::string& group, void* opaque,
                                        void (*rebalance)(rd_kafka_t*, rd_kafka_resp_err_t,
                                                          rd_kafka_topic_partition_list_t*, void*),
                                        const char* offset_reset = "earliest") {
  ConfHolder holder;
  if (auto st = apply_settings(holder.conf, consumer_settings(o, group, offset_reset)); !st) return std::move(st).error();
  rd_kafka_conf_set_log_cb(holder.conf, on_log);
  rd_kafka_conf_set_error_cb(holder.conf, on_error);
  rd_kafka_conf_set_opaque(holder.conf, opaque);
  if (rebalance) rd_kafka_conf_set_rebalance_cb(holder.conf, rebalance);
  return holder.create(RD_KAFKA_CONSUMER);
}

Error kafka_error(ErrorCode code, const std::string& what, rd_kafka_resp_err_t err) {
  return Error(code, what + ": " + rd_kafka_err2str(err)).with("kafkaError", rd_kafka_err2name(err));
}

// One publish() waiting for its delivery report. Shared between the waiting thread and the
// report (which may arrive after the waiter gave up).
struct Delivery {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
  int32_t partition = -1;
  int64_t offset = -1;
};

void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
  auto* holder = static_cast<std::shared_ptr<Delivery>*>(m->_private);
  if (!holder) return;
  {
    std::lock_guard lock((*holder)->mu);
    (*holder)->done = true;
    (*holder)->err = m->err;
    (*holder)->partition = m->partition;
    (*holder)->offset = m->offset;
  }
  (*holder)->cv.notify_all();
  delete holder;
}

// ---------------------------------------------------------------------------------------------

class KafkaConsumer final : public Consumer {
 public:
  KafkaConsumer(const KafkaBusOptions& bus_options, ConsumerOptions options)
      : bus_options_(bus_options), options_(std::move(options)) {}

  ~KafkaConsumer() override {
    close();
    if (queue_) rd_kafka_queue_destroy(queue_);
    if (rk_) rd_kafka_destroy(rk_);
  }

  Status open() {
    // A broadcast consumer is the only member of a group of its own, starting at the end; it never
    // commits, so the group holds no offsets.
    auto rk = new_consumer_handle(bus_options_, options_.group, this, &KafkaConsumer::on_rebalance,
                                  options_.broadcast ? "latest" : "earliest");
    if (!rk) return std::move(rk).error();
    rk_ = *rk;
    rd_kafka_poll_set_consumer(rk_);  // errors and rebalances are served by consumer_poll
    queue_ = rd_kafka_queue_get_consumer(rk_);
    rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(static_cast<int>(options_.topics.size()));
    for (const auto& t : options_.topics) rd_kafka_topic_partition_list_add(topics, t.c_str(), RD_KAFKA_PARTITION_UA);
    const rd_kafka_resp_err_t err = rd_kafka_subscribe(rk_, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) return kafka_error(ErrorCode::kUnavailable, "cannot subscribe", err).with("group", options_.group);
    return {};
  }

  Result<std::vector<BusMessage>> poll(std::chrono::milliseconds timeout) override {
    std::vector<BusMessage> batch;
    if (closed_) return batch;
    revoked_in_poll_ = false;
    if (!pending_rewinds_.empty()) seek_pending();
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (batch.size() < options_.max_batch) {
      if (woken_.exchange(false)) break;
      int wait_ms = 0;
      if (batch.empty()) {
        // Short slices so wake() is noticed even if the queue yield is missed.
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        wait_ms = static_cast<int>(std::clamp<int64_t>(left.count(), 0, 100));
      }
      rd_kafka_message_t* m = rd_kafka_consumer_poll(rk_, wait_ms);
      if (!m) {
        if (!batch.empty() || std::chrono::steady_clock::now() >= deadline) break;
        continue;
      }
      if (m->err) {
        const rd_kafka_resp_err_t err = m->err;
        const std::string reason = rd_kafka_message_errstr(m);
        rd_kafka_message_destroy(m);
        if (err == RD_KAFKA_RESP_ERR__PARTITION_EOF) continue;
        char fatal[256];
        if (rd_kafka_fatal_error(rk_, fatal, sizeof fatal))
          return Error(ErrorCode::kUnavailable, std::string("Kafka consumer failed: ") + fatal)
              .with("group", options_.group);
        log_warn("kafka.consume_error", {{"group", options_.group}, {"error", rd_kafka_err2name(err)}, {"reason", reason}});
        if (!batch.empty()) break;
        continue;
      }
      batch.push_back(to_bus_message(m));
      rd_kafka_message_destroy(m);
    }
    if (revoked_in_poll_) {
      // Messages of partitions revoked while this poll ran now belong to another member.
      std::erase_if(batch, [&](const BusMessage& b) { return !assigned_.count({b.topic, b.partition}); });
    }
    if (!pending_rewinds_.empty()) {
      // A partition whose seek has not happened yet must not run ahead of the rewound message.
      std::erase_if(batch, [&](const BusMessage& b) { return pending_rewinds_.count({b.topic, b.partition}) > 0; });
    }
    return batch;
  }

  Status commit(const BusMessage& msg) override {
    if (options_.broadcast) return {};
    if (closed_) return Error(ErrorCode::kFailedPrecondition, "consumer is closed").with("group", options_.group);
    // Revoked since it was polled (a stage may hold it in a lane queue): its new owner starts at
    // the group's last commit and handles it again (at-least-once); committing here could move
    // the group's offset back.
    if (!assigned_.count({msg.topic, msg.partition})) return {};
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, msg.topic.c_str(), msg.partition)->offset = msg.offset + 1;
    const rd_kafka_resp_err_t err = rd_kafka_commit(rk_, list, 0 /* synchronous */);
    rd_kafka_resp_err_t part_err = list->elems[0].err;
    rd_kafka_topic_partition_list_destroy(list);
    if (err || part_err)
      return kafka_error(ErrorCode::kUnavailable, "commit failed", err ? err : part_err)
          .with("group", options_.group).with("topic", msg.topic).with("partition", std::to_string(msg.partition))
          .with("offset", std::to_string(msg.offset));
    return {};
  }

  void rewind(const BusMessage& msg) override {
    if (closed_ || !assigned_.count({msg.topic, msg.partition})) return;  // the next owner starts at the commit
    const std::pair<std::string, int> tp{msg.topic, msg.partition};
    auto it = pending_rewinds_.find(tp);
    if (it == pending_rewinds_.end() || it->second > msg.offset) pending_rewinds_[tp] = msg.offset;
    seek_pending();
  }

  void pause(const std::string& topic, bool paused) override {
    if (closed_) return;
    if (paused ? !paused_.insert(topic).second : paused_.erase(topic) == 0) return;
    std::vector<std::pair<std::string, int>> parts;
    for (const auto& tp : assigned_)
      if (tp.first == topic) parts.push_back(tp);
    set_paused(parts, paused);
  }

  void wake() override {
    woken_ = true;
    if (queue_) rd_kafka_queue_yield(queue_);
  }

  void close() override {
    if (closed_.exchange(true) || !rk_) return;
    // Leaves the group (the revoke callback runs here), so its partitions move at once.
    if (const rd_kafka_resp_err_t err = rd_kafka_consumer_close(rk_); err)
      log_warn("kafka.close_failed", {{"group", options_.group}, {"error", rd_kafka_err2str(err)}});
  }

 private:
  // Seeks every partition with a pending rewind; those that fail stay pending (retried at the
  // next poll, their messages held back meanwhile), so a failed seek never skips a message.
  void seek_pending() {
    for (auto it = pending_rewinds_.begin(); it != pending_rewinds_.end();) {
      if (!assigned_.count(it->first)) {
        it = pending_rewinds_.erase(it);
        continue;
      }
      rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
      rd_kafka_topic_partition_list_add(list, it->first.first.c_str(), it->first.second)->offset = it->second;
      rd_kafka_error_t* error = rd_kafka_seek_partitions(rk_, list, 5000);
      const rd_kafka_resp_err_t part_err = list->elems[0].err;
      rd_kafka_topic_partition_list_destroy(list);
      if (!error && !part_err) {
        it = pending_rewinds_.erase(it);
        continue;
      }
      log_warn("kafka.rewind_failed", {{"group", options_.group}, {"topic", it->first.first},
                                       {"partition", it->first.second}, {"offset", static_cast<long long>(it->second)},
                                       {"error", error ? rd_kafka_error_string(error) : rd_kafka_err2str(part_err)}});
      if (error) rd_kafka_error_destroy(error);
      ++it;
    }
  }

  // Pausing purges what librdkafka prefetched of these partitions; resuming fetches again from
  // the position after the last message poll() returned (or a seek's).
  void set_paused(const std::vector<std::pair<std::string, int>>& parts, bool paused) {
    if (parts.empty()) return;
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(static_cast<int>(parts.size()));
    for (const auto& [topic, partition] : parts) rd_kafka_topic_partition_list_add(list, topic.c_str(), partition);
    const rd_kafka_resp_err_t err = paused ? rd_kafka_pause_partitions(rk_, list) : rd_kafka_resume_partitions(rk_, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (err)
      log_warn("kafka.pause_failed", {{"group", options_.group}, {"paused", paused}, {"error", rd_kafka_err2str(err)}});
  }

  static BusMessage to_bus_message(const rd_kafka_message_t* m) {
    BusMessage b;
    b.topic = rd_kafka_topic_name(m->rkt);
    b.partition = m->partition;
    b.offset = m->offset;
    if (m->key) b.key.assign(static_cast<const char*>(m->key), m->key_len);
    if (m->payload) b.payload.assign(static_cast<const char*>(m->payload), m->len);
    rd_kafka_headers_t* headers = nullptr;
    if (rd_kafka_message_headers(m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR && headers) {
      const char* name = nullptr;
      const void* value = nullptr;
      size_t size = 0;
      for (size_t i = 0; rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i)
        b.headers.emplace_back(name, value ? std::string(static_cast<const char*>(value), size) : std::string());
    }
    rd_kafka_timestamp_type_t type;
    const int64_t ts = rd_kafka_message_timestamp(m, &type);
    if (ts >= 0) b.timestamp = Timestamp(std::chrono::milliseconds(ts));
    return b;
  }

  static void on_rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts, void* opaque) {
    static_cast<KafkaConsumer*>(opaque)->rebalance(rk, err, parts);
  }

  void rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts) {
    const bool cooperative = std::strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      // Fetching starts at the group's committed offset (auto.offset.reset=earliest without one).
      if (cooperative) {
        if (rd_kafka_error_t* e = rd_kafka_incremental_assign(rk, parts)) {
          log_error("kafka.assign_failed", {{"group", options_.group}, {"error", rd_kafka_error_string(e)}});
          rd_kafka_error_destroy(e);
        }
      } else {
        rd_kafka_assign(rk, parts);
      }
      // A partition keeps librdkafka's paused flag across a revoke and a re-assign: set each new
      // one to what its topic is now.
      std::vector<std::pair<std::string, int>> to_pause, to_resume;
      for (int i = 0; i < parts->cnt; ++i) {
        std::pair<std::string, int> tp{parts->elems[i].topic, parts->elems[i].partition};
        (paused_.count(tp.first) ? to_pause : to_resume).push_back(tp);
        assigned_.insert(std::move(tp));
      }
      set_paused(to_pause, true);
      set_paused(to_resume, false);
      log_info("kafka.partitions_assigned", {{"group", options_.group}, {"count", parts->cnt}});
      return;
    }
    // Revoked (or an error): the runner committed what it finished before this poll; anything
    // else of these partitions is redelivered to their next owner.
    const bool lost = rd_kafka_assignment_lost(rk);
    if (cooperative && err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
      if (rd_kafka_error_t* e = rd_kafka_incremental_unassign(rk, parts)) {
        log_error("kafka.unassign_failed", {{"group", options_.group}, {"error", rd_kafka_error_string(e)}});
        rd_kafka_error_destroy(e);
      }
      for (int i = 0; i < parts->cnt; ++i) {
        assigned_.erase({parts->elems[i].topic, parts->elems[i].partition});
        pending_rewinds_.erase({parts->elems[i].topic, parts->elems[i].partition});
      }
    } else {
      rd_kafka_assign(rk, nullptr);
      assigned_.clear();
      pending_rewinds_.clear();
    }
    revoked_in_poll_ = true;
    log_info("kafka.partitions_revoked", {{"group", options_.group}, {"count", parts ? parts->cnt : 0}, {"lost", lost},
                                          {"reason", rd_kafka_err2name(err)}});
  }

  const KafkaBusOptions& bus_options_;
  ConsumerOptions options_;
  rd_kafka_t* rk_ = nullptr;
  rd_kafka_queue_t* queue_ = nullptr;
  std::set<std::pair<std::string, int>> assigned_;  // touched only on the consumer's thread
  std::set<std::string> paused_;                    // topics paused by pause(); consumer thread only
  std::map<std::pair<std::string, int>, int64_t> pending_rewinds_;  // partition -> offset to seek to
  bool revoked_in_poll_ = false;
  std::atomic<bool> woken_{false};
  std::atomic<bool> closed_{false};
};

}  // namespace

// ---------------------------------------------------------------------------------------------

KafkaBus::KafkaBus(KafkaBusOptions options) : options_(std::move(options)) {}

KafkaBus::~KafkaBus() { stop(); }

Result<std::unique_ptr<KafkaBus>> KafkaBus::open(KafkaBusOptions options) {
  auto bus = std::make_unique<KafkaBus>(std::move(options));
  if (auto st = bus->start(); !st) return std::move(st).error();
  return bus;
}

Status KafkaBus::start() {
  if (producer_) return {};
  if (options_.bootstrap_servers.empty())
    return Error(ErrorCode::kInvalidArgument, "the Kafka bus needs bootstrap servers (bus = kafka://HOST:PORT,...)");
  auto settings = common_settings(options_, options_.client_id);
  settings.insert(settings.end(), {
                                      {"enable.idempotence", "true"},
                                      {"acks", "all"},
                                      {"linger.ms", "1"},
                                      {"partitioner", "murmur2_random"},
                                      {"message.timeout.ms", std::to_string(to_int_ms(options_.publish_timeout))},
                                  });
  append(settings, options_.settings);
  append(settings, options_.producer_settings);
  ConfHolder holder;
  if (auto st = apply_settings(holder.conf, settings); !st) return st;
  rd_kafka_conf_set_dr_msg_cb(holder.conf, on_delivery);
  rd_kafka_conf_set_log_cb(holder.conf, on_log);
  rd_kafka_conf_set_error_cb(holder.conf, on_error);
  auto rk = holder.create(RD_KAFKA_PRODUCER);
  if (!rk) return std::move(rk).error();
  producer_ = *rk;
  stopping_ = false;
  poller_ = std::thread([this] { serve_delivery_reports(); });
  if (auto st = ensure_topics(); !st) {
    stop();
    return st;
  }
  log_info("kafka.bus_started", {{"bootstrap", options_.bootstrap_servers}, {"topicsAutoCreated", topics_auto_created_}});
  return {};
}

void KafkaBus::stop() {
  {
    std::lock_guard lock(lag_mu_);
    for (auto& [group, rk] : lag_handles_) rd_kafka_destroy(rk);
    lag_handles_.clear();
  }
  if (!producer_) return;
  stopping_ = true;
  if (poller_.joinable()) poller_.join();
  if (const rd_kafka_resp_err_t err = rd_kafka_flush(producer_, to_int_ms(options_.publish_timeout)); err)
    log_warn("kafka.flush_incomplete", {{"error", rd_kafka_err2str(err)}, {"inQueue", rd_kafka_outq_len(producer_)}});
  // Whatever is left fails its delivery report, which releases its waiter.
  rd_kafka_purge(producer_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  rd_kafka_poll(producer_, 0);
  rd_kafka_destroy(producer_);
  producer_ = nullptr;
}

void KafkaBus::serve_delivery_reports() {
  while (!stopping_) rd_kafka_poll(producer_, 100);
}

Status KafkaBus::ensure_topics() {
  if (options_.topics.empty()) return {};
  const rd_kafka_metadata_t* md = nullptr;
  const rd_kafka_resp_err_t err = rd_kafka_metadata(producer_, 1, nullptr, &md, to_int_ms(options_.admin_timeout));
  if (err)
    return kafka_error(ErrorCode::kUnavailable, "cannot reach the Kafka cluster", err)
        .with("bootstrap", options_.bootstrap_servers);
  std::set<std::string> existing;
  for (int i = 0; i < md->topic_cnt; ++i)
    if (md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR) existing.insert(md->topics[i].topic);
  rd_kafka_metadata_destroy(md);
  std::vector<std::string> missing;
  for (const auto& t : options_.topics)
    if (!existing.count(t)) missing.push_back(t);
  if (missing.empty()) return {};

  char errstr[512];
  std::vector<rd_kafka_NewTopic_t*> new_topics;
  for (const auto& t : missing) {
    rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(t.c_str(), options_.partitions, options_.replication_factor,
                                                    errstr, sizeof errstr);
    if (!nt) {
      for (auto* n : new_topics) rd_kafka_NewTopic_destroy(n);
      return Error(ErrorCode::kInvalidArgument, std::string("bad topic layout: ") + errstr).with("topic", t);
    }
    new_topics.push_back(nt);
  }
  rd_kafka_AdminOptions_t* admin = rd_kafka_AdminOptions_new(producer_, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_AdminOptions_set_request_timeout(admin, to_int_ms(options_.admin_timeout), errstr, sizeof errstr);
  rd_kafka_AdminOptions_set_operation_timeout(admin, to_int_ms(options_.admin_timeout), errstr, sizeof errstr);
  rd_kafka_queue_t* queue = rd_kafka_queue_new(producer_);
  rd_kafka_CreateTopics(producer_, new_topics.data(), new_topics.size(), admin, queue);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(queue, to_int_ms(options_.admin_timeout + 1000ms));

  Status result;
  std::string fallback_reason;
  if (!ev) {
    fallback_reason = "no answer to CreateTopics";
  } else if (rd_kafka_event_error(ev)) {
    fallback_reason = rd_kafka_event_error_string(ev);
  } else {
    size_t n = 0;
    const rd_kafka_topic_result_t** results =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    for (size_t i = 0; i < n; ++i) {
      const rd_kafka_resp_err_t e = rd_kafka_topic_result_error(results[i]);
      const char* name = rd_kafka_topic_result_name(results[i]);
      if (e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        log_info("kafka.topic_ready", {{"topic", name}, {"created", e == RD_KAFKA_RESP_ERR_NO_ERROR},
                                       {"partitions", options_.partitions}, {"replicationFactor", options_.replication_factor}});
      } else if (e == RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR || e == RD_KAFKA_RESP_ERR_INVALID_PARTITIONS) {
        result = kafka_error(ErrorCode::kInvalidArgument, "cannot create topic with this layout (set kafka partitions / "
                                                          "replication factor to fit the cluster)", e)
                     .with("topic", name);
      } else {
        fallback_reason = std::string(name) + ": " + rd_kafka_err2str(e);
      }
    }
  }
  if (ev) rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(queue);
  rd_kafka_AdminOptions_destroy(admin);
  for (auto* n : new_topics) rd_kafka_NewTopic_destroy(n);
  if (!result) return result;
  if (!fallback_reason.empty()) {
    topics_auto_created_ = true;
    log_warn("kafka.create_topics_unavailable",
             {{"reason", fallback_reason}, {"missing", static_cast<long long>(missing.size())},
              {"fallback", "the broker creates topics on first use (auto.create.topics.enable) with its default layout"}});
  }
  return {};
}

Status KafkaBus::publish(const OutboxMessage& message) { return publish_batch(std::span(&message, 1)).status; }

PublishOutcome KafkaBus::publish_batch(std::span<const OutboxMessage> messages) {
  PublishOutcome out;
  if (!producer_) {
    out.status = Error(ErrorCode::kFailedPrecondition, "the Kafka bus is not started");
    return out;
  }
  // Queue every message, then wait for the delivery reports in order: one round trip for the
  // batch (the idempotent producer keeps each partition's order), not one per message.
  std::vector<std::shared_ptr<Delivery>> deliveries;
  deliveries.reserve(messages.size());
  std::vector<rd_kafka_vu_t> vus;
  for (const auto& message : messages) {
    auto delivery = std::make_shared<Delivery>();
    auto* holder = new std::shared_ptr<Delivery>(delivery);  // released by on_delivery
    vus.clear();
    auto add = [&](rd_kafka_vtype_t type) -> rd_kafka_vu_t& {
      vus.emplace_back();
      vus.back().vtype = type;
      return vus.back();
    };
    add(RD_KAFKA_VTYPE_TOPIC).u.cstr = message.topic.c_str();
    auto& key = add(RD_KAFKA_VTYPE_KEY);
    key.u.mem.ptr = const_cast<char*>(message.key.data());
    key.u.mem.size = message.key.size();
    auto& value = add(RD_KAFKA_VTYPE_VALUE);
    value.u.mem.ptr = const_cast<char*>(message.payload.data());
    value.u.mem.size = message.payload.size();
    for (const auto& [name, v] : message.headers) {
      auto& h = add(RD_KAFKA_VTYPE_HEADER);
      h.u.header.name = name.c_str();
      h.u.header.val = v.data();
      h.u.header.size = static_cast<ssize_t>(v.size());
    }
    add(RD_KAFKA_VTYPE_MSGFLAGS).u.i = RD_KAFKA_MSG_F_COPY;
    add(RD_KAFKA_VTYPE_OPAQUE).u.ptr = holder;
    if (rd_kafka_error_t* error = rd_kafka_produceva(producer_, vus.data(), vus.size())) {
      delete holder;
      out.status = Error(ErrorCode::kUnavailable, std::string("cannot queue the message: ") + rd_kafka_error_string(error))
                       .with("topic", message.topic).with("key", message.key);
      rd_kafka_error_destroy(error);
      break;
    }
    deliveries.push_back(std::move(delivery));
  }
  // message.timeout.ms = publish_timeout, so every report comes by then; the margin covers its trip.
  const auto deadline = std::chrono::steady_clock::now() + options_.publish_timeout + 2s;
  for (size_t i = 0; i < deliveries.size(); ++i) {
    auto& delivery = *deliveries[i];
    const auto& message = messages[i];
    std::unique_lock lock(delivery.mu);
    if (!delivery.cv.wait_until(lock, deadline, [&] { return delivery.done; })) {
      out.status = Error(ErrorCode::kUnavailable, "no delivery report from Kafka in time")
                       .with("topic", message.topic).with("key", message.key);
      return out;
    }
    if (delivery.err) {
      out.status = kafka_error(ErrorCode::kUnavailable, "Kafka did not accept the message", delivery.err)
                       .with("topic", message.topic).with("key", message.key);
      return out;
    }
    ++out.delivered;
  }
  return out;
}

Result<std::unique_ptr<Consumer>> KafkaBus::subscribe(const ConsumerOptions& options) {
  if (options.group.empty() || options.topics.empty() || options.max_batch == 0)
    return Error(ErrorCode::kInvalidArgument, "a consumer needs a group, at least one topic and max_batch > 0");
  ConsumerOptions o = options;
  if (o.broadcast) {  // a group of its own
    SystemRandom random;
    o.group += "." + IdGenerator(random).hex(8);
  }
  auto consumer = std::make_unique<KafkaConsumer>(options_, std::move(o));
  if (auto st = consumer->open(); !st) return std::move(st).error();
  return std::unique_ptr<Consumer>(std::move(consumer));
}

Result<rd_kafka_t*> KafkaBus::lag_handle(const std::string& group) {
  // lag_mu_ is held by the caller.
  if (auto it = lag_handles_.find(group); it != lag_handles_.end()) return it->second;
  auto rk = new_consumer_handle(options_, group, nullptr, nullptr);
  if (!rk) return std::move(rk).error();
  lag_handles_[group] = *rk;
  return *rk;
}

Result<int64_t> KafkaBus::lag(const std::string& group, const std::vector<std::string>& topics) {
  std::lock_guard lock(lag_mu_);
  auto rk = lag_handle(group);
  if (!rk) return std::move(rk).error();
  const int timeout = to_int_ms(options_.ping_timeout);
  const rd_kafka_metadata_t* md = nullptr;
  if (const rd_kafka_resp_err_t err = rd_kafka_metadata(*rk, 1, nullptr, &md, timeout); err)
    return kafka_error(ErrorCode::kUnavailable, "cannot read Kafka metadata", err);
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(16);
  for (int i = 0; i < md->topic_cnt; ++i) {
    const auto& t = md->topics[i];
    if (t.err || std::find(topics.begin(), topics.end(), t.topic) == topics.end()) continue;
    for (int p = 0; p < t.partition_cnt; ++p) rd_kafka_topic_partition_list_add(list, t.topic, t.partitions[p].id);
  }
  rd_kafka_metadata_destroy(md);
  Result<int64_t> total = int64_t{0};
  if (const rd_kafka_resp_err_t err = rd_kafka_committed(*rk, list, timeout); err) {
    total = kafka_error(ErrorCode::kUnavailable, "cannot read committed offsets", err).with("group", group);
  } else {
    for (int i = 0; i < list->cnt; ++i) {
      const auto& tp = list->elems[i];
      int64_t low = 0, high = 0;
      if (const rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(*rk, tp.topic, tp.partition, &low, &high, timeout); e) {
        total = kafka_error(ErrorCode::kUnavailable, "cannot read watermarks", e).with("topic", tp.topic);
        break;
      }
      const int64_t from = tp.offset >= 0 ? std::max(tp.offset, low) : low;
      *total += std::max<int64_t>(0, high - from);
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
  return total;
}

Status KafkaBus::ping() {
  if (!producer_) return Error(ErrorCode::kFailedPrecondition, "the Kafka bus is not started");
  const rd_kafka_metadata_t* md = nullptr;
  if (const rd_kafka_resp_err_t err = rd_kafka_metadata(producer_, 0, nullptr, &md, to_int_ms(options_.ping_timeout)); err)
    return kafka_error(ErrorCode::kUnavailable, "Kafka cluster not reachable", err)
        .with("bootstrap", options_.bootstrap_servers);
  const int brokers = md->broker_cnt;
  rd_kafka_metadata_destroy(md);
  if (brokers == 0) return Error(ErrorCode::kUnavailable, "Kafka cluster has no brokers");
  return {};
}

Result<std::vector<std::string>> kafka_cluster_topics(const KafkaBusOptions& options, std::chrono::milliseconds timeout) {
  auto rk = new_consumer_handle(options, "doctor", nullptr, nullptr);
  if (!rk) return std::move(rk).error();
  const rd_kafka_metadata_t* md = nullptr;
  const rd_kafka_resp_err_t err = rd_kafka_metadata(*rk, 1, nullptr, &md, to_int_ms(timeout));
  Result<std::vector<std::string>> out = std::vector<std::string>{};
  if (err) {
    out = kafka_error(ErrorCode::kUnavailable, "Kafka cluster not reachable", err).with("bootstrap", options.bootstrap_servers);
  } else {
    for (int i = 0; i < md->topic_cnt; ++i)
      if (!md->topics[i].err) out->push_back(md->topics[i].topic);
    rd_kafka_metadata_destroy(md);
  }
  rd_kafka_destroy(*rk);
  return out;
}

}  // namespace deeplens
