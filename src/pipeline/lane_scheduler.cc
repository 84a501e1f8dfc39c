#include "pipeline/lane_scheduler.h"

#include <algorithm>

namespace deeplens {

LaneScheduler::LaneScheduler(std::vector<LaneSpec> lanes, size_t pause_at, size_t resume_at)
    : lanes_(std::move(lanes)), pause_at_(std::max<size_t>(pause_at, 1)), resume_at_(std::min(resume_at, pause_at_ - 1)) {
  if (lanes_.empty()) lanes_.push_back(LaneSpec{"all", "", 1});
  for (auto& l : lanes_) l.weight = std::max(l.weight, 1);
  queues_.resize(lanes_.size());
  credit_.assign(lanes_.size(), 0);
  paused_.assign(lanes_.size(), false);
}

size_t LaneScheduler::lane_of(const BusMessage& msg) const {
  for (size_t i = 0; i < lanes_.size(); ++i)
    if (lanes_[i].topic.empty() || lanes_[i].topic == msg.topic) return i;
  return lanes_.size() - 1;
}

void LaneScheduler::add(std::vector<BusMessage>&& messages) {
  for (auto& m : messages) {
    const size_t lane = lane_of(m);
    queues_[lane].push_back(std::move(m));
  }
}

std::vector<BusMessage> LaneScheduler::take(size_t n) {
  std::vector<BusMessage> out;
  while (out.size() < n) {
    long total = 0;
    size_t best = lanes_.size();
    for (size_t i = 0; i < lanes_.size(); ++i) {
      if (queues_[i].empty()) {
        credit_[i] = 0;  // an idle lane saves up no claim on later slots
        continue;
      }
      credit_[i] += lanes_[i].weight;
      total += lanes_[i].weight;
      if (best == lanes_.size() || credit_[i] > credit_[best]) best = i;
    }
    if (best == lanes_.size()) break;
    credit_[best] -= total;
    auto& q = queues_[best];
    const auto next = q.begin() + static_cast<std::ptrdiff_t>(oldest_head(q));
    out.push_back(std::move(*next));
    q.erase(next);
  }
  return out;
}

size_t LaneScheduler::oldest_head(const std::deque<BusMessage>& q) {
  // The first message seen of each partition is its head; of those, the oldest (the first queued
  // on a tie). A handful of partitions and a few batches queued: a scan is cheap.
  std::vector<std::pair<const std::string*, int>> seen;
  size_t best = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    const BusMessage& m = q[i];
    const bool head = std::none_of(seen.begin(), seen.end(),
                                   [&](const auto& s) { return s.second == m.partition && *s.first == m.topic; });
    if (!head) continue;
    seen.emplace_back(&m.topic, m.partition);
    if (m.timestamp < q[best].timestamp) best = i;
  }
  return best;
}

void LaneScheduler::drop_from(const BusMessage& msg) {
  auto& q = queues_[lane_of(msg)];
  std::erase_if(q, [&](const BusMessage& m) {
    return m.topic == msg.topic && m.partition == msg.partition && m.offset >= msg.offset;
  });
}

bool LaneScheduler::empty() const {
  return std::all_of(queues_.begin(), queues_.end(), [](const auto& q) { return q.empty(); });
}

bool LaneScheduler::saturated(size_t n) const {
  for (size_t i = 0; i < lanes_.size(); ++i)
    if (!paused_[i] && queues_[i].size() < n) return false;
  return true;
}

std::vector<LaneScheduler::FlowChange> LaneScheduler::flow_changes() {
  std::vector<FlowChange> out;
  for (size_t i = 0; i < lanes_.size(); ++i) {
    if (lanes_[i].topic.empty()) continue;  // a stage without lanes takes no more than a poll at a time
    const size_t depth = queues_[i].size();
    if (!paused_[i] && depth >= pause_at_) {
      paused_[i] = true;
      out.push_back({lanes_[i].topic, true});
    } else if (paused_[i] && depth <= resume_at_) {
      paused_[i] = false;
      out.push_back({lanes_[i].topic, false});
    }
  }
  return out;
}

}  // namespace deeplens
