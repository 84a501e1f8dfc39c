// The weighted choice between priority lanes and their flow control (pipeline/lane_scheduler.h).
#include "pipeline/lane_scheduler.h"

#include <gtest/gtest.h>

#include <map>

namespace deeplens {
namespace {

const std::vector<LaneSpec> kLanes = {{"high", "t.high", 6}, {"normal", "t", 3}, {"low", "t.low", 1}};

std::vector<BusMessage> messages(const std::string& topic, int n, int64_t first_offset = 0, int partition = 0) {
  std::vector<BusMessage> out;
  for (int i = 0; i < n; ++i) {
    BusMessage m;
    m.topic = topic;
    m.partition = partition;
    m.offset = first_offset + i;
    out.push_back(m);
  }
  return out;
}

std::map<std::string, int> count_topics(const std::vector<BusMessage>& batch) {
  std::map<std::string, int> n;
  for (const auto& m : batch) ++n[m.topic];
  return n;
}

TEST(LaneScheduler, EveryTenSlotsHoldSixHighThreeNormalOneLowWhileAllAreBusy) {
  LaneScheduler s(kLanes, 1000, 10);
  s.add(messages("t.high", 300));
  s.add(messages("t", 300));
  s.add(messages("t.low", 300));
  // Batches of 8 do not divide 10: the shares must hold across batch boundaries.
  std::vector<BusMessage> taken;
  for (int b = 0; b < 25; ++b)
    for (auto& m : s.take(8)) taken.push_back(std::move(m));
  ASSERT_EQ(taken.size(), 200u);
  for (size_t window = 0; window + 10 <= taken.size(); window += 10) {
    auto n = count_topics({taken.begin() + static_cast<long>(window), taken.begin() + static_cast<long>(window + 10)});
    EXPECT_EQ(n["t.high"], 6) << "slots " << window;
    EXPECT_EQ(n["t"], 3) << "slots " << window;
    EXPECT_EQ(n["t.low"], 1) << "slots " << window;
  }
}

TEST(LaneScheduler, HighGoesFirstAndLowIsTakenWithinTenSlotsOfReachingTheHead) {
  LaneScheduler s(kLanes, 1000, 10);
  s.add(messages("t.low", 50));
  s.add(messages("t.high", 3));
  auto batch = s.take(4);
  ASSERT_EQ(batch.size(), 4u);
  EXPECT_EQ(batch[0].topic, "t.high");  // high first although low was queued before it
  EXPECT_EQ(count_topics(batch)["t.high"], 3);
  // Continuous high and normal: the low head never waits more than 10 slots.
  s.add(messages("t.high", 500, 3));
  s.add(messages("t", 500));
  int since_low = 0, worst = 0;
  for (int i = 0; i < 60; ++i) {
    for (const auto& m : s.take(8)) {
      ++since_low;
      if (m.topic == "t.low") {
        worst = std::max(worst, since_low);
        since_low = 0;
      }
    }
  }
  EXPECT_LE(worst, 10);
  EXPECT_GT(worst, 0);
}

TEST(LaneScheduler, MessagesOfAPartitionKeepTheirOrder) {
  LaneScheduler s(kLanes, 1000, 10);
  auto a = messages("t.low", 20, 0, 0);
  auto b = messages("t.low", 20, 0, 1);
  a.insert(a.end(), b.begin(), b.end());
  s.add(std::move(a));
  s.add(messages("t.high", 20));
  std::map<int, int64_t> next;
  while (!s.empty())
    for (const auto& m : s.take(5)) {
      if (m.topic != "t.low") continue;
      EXPECT_EQ(m.offset, next[m.partition]) << "partition " << m.partition;
      next[m.partition] = m.offset + 1;
    }
  EXPECT_EQ(next[0], 20);
  EXPECT_EQ(next[1], 20);
}

// A poll hands over its messages partition by partition; the lane serves them by age, so an image
// in the last partition polled does not wait behind every other partition's batch.
TEST(LaneScheduler, ALaneTakesTheOldestPartitionHeadFirst) {
  LaneScheduler s(kLanes, 1000, 10);
  std::vector<BusMessage> polled;
  // Partition 0 holds the messages published at t = 0, 2, 4, partition 1 those at 1, 3, 5; then a
  // partition whose own order is not its timestamps' (a clock step): its order wins.
  for (int p = 0; p < 2; ++p)
    for (int i = 0; i < 3; ++i) {
      BusMessage m;
      m.topic = "t.low";
      m.partition = p;
      m.offset = i;
      m.timestamp = Timestamp(std::chrono::milliseconds(2 * i + p));
      polled.push_back(m);
    }
  for (int i = 0; i < 2; ++i) {
    BusMessage m;
    m.topic = "t.low";
    m.partition = 2;
    m.offset = i;
    m.timestamp = Timestamp(std::chrono::milliseconds(i == 0 ? 10 : 0));
    polled.push_back(m);
  }
  s.add(std::move(polled));
  std::vector<std::pair<int, int64_t>> order;
  for (const auto& m : s.take(8)) order.emplace_back(m.partition, m.offset);
  const std::vector<std::pair<int, int64_t>> expected = {{0, 0}, {1, 0}, {0, 1}, {1, 1}, {0, 2}, {1, 2}, {2, 0}, {2, 1}};
  EXPECT_EQ(order, expected);
}

TEST(LaneScheduler, AFullLaneAsksForAPauseAndAResumeOnceDrained) {
  LaneScheduler s(kLanes, 16, 8);
  s.add(messages("t.low", 20));
  s.add(messages("t.high", 4));
  auto changes = s.flow_changes();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].topic, "t.low");
  EXPECT_TRUE(changes[0].paused);
  EXPECT_TRUE(s.flow_changes().empty());  // said once
  s.take(10);                             // 4 high + 6 low: 14 low left, still above 8
  EXPECT_TRUE(s.flow_changes().empty());
  s.take(6);  // 8 left
  changes = s.flow_changes();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].topic, "t.low");
  EXPECT_FALSE(changes[0].paused);
}

TEST(LaneScheduler, ARewoundPartitionIsForgottenFromTheRewoundOffsetOn) {
  LaneScheduler s(kLanes, 1000, 10);
  s.add(messages("t.low", 10, 0, 0));
  s.add(messages("t.low", 10, 0, 1));
  BusMessage rewound;
  rewound.topic = "t.low";
  rewound.partition = 0;
  rewound.offset = 4;
  s.drop_from(rewound);
  EXPECT_EQ(s.queued(2), 14u);  // partition 0 keeps 0..3, partition 1 all ten
  std::map<int, int> per_partition;
  for (const auto& m : s.take(100)) {
    ++per_partition[m.partition];
    if (m.partition == 0) {
      EXPECT_LT(m.offset, 4);
    }
  }
  EXPECT_EQ(per_partition[0], 4);
  EXPECT_EQ(per_partition[1], 10);
}

TEST(LaneScheduler, WithoutLanesItIsOneFifoOverEveryTopic) {
  LaneScheduler s({}, 16, 8);
  s.add(messages("a", 3));
  s.add(messages("b", 3));
  auto batch = s.take(10);
  ASSERT_EQ(batch.size(), 6u);
  EXPECT_EQ(batch[0].topic, "a");
  EXPECT_EQ(batch[3].topic, "b");
  s.add(messages("a", 40));
  EXPECT_TRUE(s.flow_changes().empty());  // a stage without lanes never pauses
}

}  // namespace
}  // namespace deeplens
