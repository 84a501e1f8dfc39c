#include "pipeline/stage_runner.h"

#include <map>

#include "common/log.h"

namespace deeplens {

StageRunner::StageRunner(EventBus& bus, StageHandler& handler, Metrics& metrics, StageRunnerOptions options)
    : bus_(bus), handler_(handler), metrics_(metrics), options_(std::move(options)) {}

StageRunner::~StageRunner() { stop(); }

Status StageRunner::start() {
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
  const MetricLabels labels = {{"stage", options_.stage}};
  while (!stopping_) {
    auto batch = consumer.poll(options_.poll_timeout);
    if (!batch) {
      log_warn("stage.poll_failed", {{"stage", options_.stage}, {"error", batch.error().to_string()}});
      std::this_thread::sleep_for(options_.retry_backoff);
      continue;
    }
    if (batch->empty()) continue;
    const size_t done = handler_.handle(*batch);
    // Commit the last finished message of each partition (offsets are per partition).
    std::map<std::pair<std::string, int>, const BusMessage*> last;
    for (size_t i = 0; i < done && i < batch->size(); ++i) last[{(*batch)[i].topic, (*batch)[i].partition}] = &(*batch)[i];
    bool commit_failed = false;
    for (const auto& [tp, msg] : last) {
      if (auto st = consumer.commit(*msg); !st) {
        log_warn("stage.commit_failed", {{"stage", options_.stage}, {"error", st.error().to_string()}});
        commit_failed = true;
      }
    }
    metrics_.add("deeplens_stage_messages_total", labels, static_cast<double>(done));
    if (done < batch->size() || commit_failed) {
      // Redeliver the unfinished messages of each partition, from the first one.
      std::map<std::pair<std::string, int>, const BusMessage*> first;
      for (size_t i = done; i < batch->size(); ++i)
        first.emplace(std::make_pair((*batch)[i].topic, (*batch)[i].partition), &(*batch)[i]);
      for (const auto& [tp, msg] : first) consumer.rewind(*msg);
      if (!stopping_) std::this_thread::sleep_for(options_.retry_backoff);
    }
  }
}

}  // namespace deeplens
