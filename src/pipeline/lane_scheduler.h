// LaneScheduler: the local queues of a stage that consumes several lanes (topics) of one kind of
// work, and the weighted choice of what it handles next (ARCHITECTURE.md, "Priority lanes").
//
//  - Each lane is a FIFO of messages polled from its topic. A lane holding `pause_at` messages
//    asks for its topic to be paused (the consumer stops fetching it but keeps polling, so the
//    group membership and every other lane go on); it asks for a resume once it is down to
//    `resume_at`. Memory is bounded by about pause_at + one poll per lane.
//  - take(n) fills a batch slot by slot with smooth weighted round-robin over the lanes that hold
//    messages: with weights 6:3:1 and every lane busy, each run of 10 slots holds 6 high, 3 normal
//    and 1 low. The credits carry over between batches, so the shares hold for any batch size.
//    Bound: while a lane holds messages, its head is taken within ceil(W / w) slots, W the sum of
//    the weights of the busy lanes and w its own (10 slots for low at 6:3:1), so it gets at least
//    w / W of the throughput however busy the others are.
//  - Within a lane, the next message is the oldest (bus timestamp) of its partitions' heads: the
//    bus hands over a poll's messages partition by partition, and taking them in that order would
//    make an image wait behind every partition polled before its own, however late their images
//    came (the time estimates, pipeline/eta.h, count the images ahead of one by upload time).
//  - Messages of one partition stay in order (a partition belongs to one topic, a topic to one
//    lane, and only partition heads are taken), so committing the last handled message of a
//    partition is still right.
//
// Not thread-safe: one per consumer thread.
#pragma once

#include <cstddef>
#include <deque>
#include <string>
#include <vector>

#include "bus/event_bus.h"

namespace deeplens {

struct LaneSpec {
  std::string name;   // "high", "normal", "low" (metrics)
  std::string topic;  // empty = every topic (a stage without lanes)
  int weight = 1;     // >= 1
};

class LaneScheduler {
 public:
  LaneScheduler(std::vector<LaneSpec> lanes, size_t pause_at, size_t resume_at);

  // Queues polled messages in their lanes (a topic no lane names goes to the last lane).
  void add(std::vector<BusMessage>&& messages);
  // Up to n messages, chosen by weight (see above), in the order they were chosen.
  std::vector<BusMessage> take(size_t n);
  // Forgets the queued messages of msg's partition from msg's offset on: the bus delivers them
  // again after a rewind.
  void drop_from(const BusMessage& msg);

  bool empty() const;
  // True when every lane holds at least n messages or is paused: polling more cannot change the
  // next batch of n.
  bool saturated(size_t n) const;
  size_t queued(size_t lane) const { return queues_[lane].size(); }
  const std::vector<LaneSpec>& lanes() const { return lanes_; }
  size_t lane_of(const BusMessage& msg) const;

  // Topics whose fetching should now stop (paused = true) or start again.
  struct FlowChange {
    std::string topic;
    bool paused;
  };
  std::vector<FlowChange> flow_changes();

 private:
  // Index in q of the oldest partition head.
  static size_t oldest_head(const std::deque<BusMessage>& q);

  std::vector<LaneSpec> lanes_;
  std::vector<std::deque<BusMessage>> queues_;
  std::vector<long> credit_;
  std::vector<bool> paused_;
  size_t pause_at_;
  size_t resume_at_;
};

}  // namespace deeplens
