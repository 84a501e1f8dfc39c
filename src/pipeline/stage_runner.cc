#include "pipeline/stage_runner.h"

#include <algorithm>
#include <map>

#include "common/log.h"

namespace deeplens {

StageRunner::StageRunner(EventBus& bus, StageHandler& handler, Metrics& metrics, StageRunnerOptions options)
    : bus_(bus), handler_(handler), metrics_(metrics), options_(std::move(options)) {
  metrics_.describe("deeplens_lane_wait_seconds", "histogram",
                    "publish to being taken into a batch, per stage and priority lane");
}

StageRunner::~StageRunner() { stop(); }

Status StageRunner::start() {
  if (!options_.lanes.empty()) {
    options_.consumer.topics.clear();
    for (const auto& l : options_.lanes) options_.consumer.topics.push_back(l.topic);
  }
  for (int i = 0; i < options_.members; ++i) {
    auto consumer = bus_.subscribe(options_.consumer);
    if (!consumer) return std::move(consumer).error();
    consumers_.push_back(std::move(consumer).value());
  }
  for (auto& c : consumers_) threads_.emplace_back([this, raw = c.get()] { run(*raw); });
  log_info("stage.started", {{"stage", options_.stage}, {"group", options_.consumer.group},
                             {"members", options_.members}});
  return {};
}

void StageRunner::stop() {
  if (threads_.empty()) return;
  stopping_ = true;
  for (auto& c : consumers_) c->wake();
  for (auto& t : threads_) t.join();
  threads_.clear();
  for (auto& c : consumers_) c->close();
  consumers_.clear();
  log_info("stage.stopped", {{"stage", options_.stage}});
}

void StageRunner::run(Consumer& consumer) {
  const size_t batch_size = std::max<size_t>(options_.consumer.max_batch, 1);
  // A lane asks for a pause at eight batches queued and a resume at four: enough in hand to fill
  // the next batch from every lane, and to hold several partitions' heads at once (a fetch hands
  // a lane its partitions one after the other; with two batches in hand a refill was mostly one
  // partition's, so a lane drifted far from upload order on Kafka and the time estimates with it:
  // 89% of a backlog within 2x of the estimate, 100% with eight, bench/README.md). Memory: a few
  // hundred small messages per lane; a pause discards what librdkafka prefetched beyond them.
  LaneScheduler lanes(options_.lanes, 8 * batch_size, 4 * batch_size);
  std::vector<MetricLabels> wait_labels;
  for (const auto& l : lanes.lanes()) wait_labels.push_back({{"stage", options_.stage}, {"lane", l.name}});
  while (!stopping_) {
    // Block for news only with nothing in hand. Then collect what has arrived until every lane
    // holds a batch or is paused: one poll returns what the bus read first, and a batch must be
    // chosen by weight from every lane, not from whichever lane that poll happened to read.
    bool failed = false;
    for (int round = 0; round < 8 && !stopping_; ++round) {
      auto polled = consumer.poll(lanes.empty() && round == 0 ? options_.poll_timeout : std::chrono::milliseconds(0));
      if (!polled) {
        log_warn("stage.poll_failed", {{"stage", options_.stage}, {"error", polled.error().to_string()}});
        failed = true;
        break;
      }
      const bool got = !polled->empty();
      lanes.add(std::move(polled).value());
      for (const auto& change : lanes.flow_changes()) consumer.pause(change.topic, change.paused);
      if (!got || lanes.saturated(batch_size)) break;
    }
    if (failed && lanes.empty()) {
      std::this_thread::sleep_for(options_.retry_backoff);
      continue;
    }
    if (lanes.empty()) continue;
    const std::vector<BusMessage> batch = lanes.take(batch_size);
    if (!options_.lanes.empty()) {
      const Timestamp now = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
      for (const auto& m : batch)
        metrics_.observe("deeplens_lane_wait_seconds", wait_labels[lanes.lane_of(m)],
                         static_cast<double>(std::max<int64_t>((now - m.timestamp).count(), 0)) / 1000.0);
    }
    process(consumer, batch, lanes);
    for (const auto& change : lanes.flow_changes()) consumer.pause(change.topic, change.paused);
  }
}

void StageRunner::process(Consumer& consumer, const std::vector<BusMessage>& batch, LaneScheduler& lanes) {
  const MetricLabels labels = {{"stage", options_.stage}};
  const size_t done = handler_.handle(batch);
  // Commit the last finished message of each partition (offsets are per partition).
  std::map<std::pair<std::string, int>, const BusMessage*> last;
  for (size_t i = 0; i < done && i < batch.size(); ++i) last[{batch[i].topic, batch[i].partition}] = &batch[i];
  bool commit_failed = false;
  for (const auto& [tp, msg] : last) {
    if (auto st = consumer.commit(*msg); !st) {
      log_warn("stage.commit_failed", {{"stage", options_.stage}, {"error", st.error().to_string()}});
      commit_failed = true;
    }
  }
  metrics_.add("deeplens_stage_messages_total", labels, static_cast<double>(done));
  if (done < batch.size() || commit_failed) {
    // Redeliver the unfinished messages of each partition, from the first one; what the lanes
    // still hold of those partitions comes again with them.
    std::map<std::pair<std::string, int>, const BusMessage*> first;
    for (size_t i = done; i < batch.size(); ++i)
      first.emplace(std::make_pair(batch[i].topic, batch[i].partition), &batch[i]);
    for (const auto& [tp, msg] : first) {
      lanes.drop_from(*msg);
      consumer.rewind(*msg);
    }
    if (!stopping_) std::this_thread::sleep_for(options_.retry_backoff);
  }
}

}  // namespace deeplens
