// PushHub: seq numbering, fan-out by topic, replay with since, reset, history bounds, limits.
#include "api/push_hub.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace deeplens::api {
namespace {

using namespace std::chrono_literals;

struct Recorder final : PushListener {
  std::vector<std::pair<uint64_t, PushEventPtr>> got;
  void on_event(uint64_t subscription, const PushEventPtr& e) override { got.emplace_back(subscription, e); }
};

const std::string kA = "img_00000000-0000-4000-8000-00000000000a";
const std::string kB = "img_00000000-0000-4000-8000-00000000000b";

class PushHubTest : public ::testing::Test {
 protected:
  ManualClock clock_{Timestamp(std::chrono::milliseconds(1'800'000'000'000))};
};

TEST_F(PushHubTest, SeqStartsAtTheHubsStartInMicrosecondsAndIncreasesPerTenant) {
  PushHub hub({}, clock_);
  EXPECT_EQ(hub.base_seq(), 1'800'000'000'000'000ull);
  EXPECT_LT(hub.base_seq(), 1ull << 53);  // exact in JavaScript
  EXPECT_EQ(hub.publish("t1", kA, "StatusChanged", "{}"), hub.base_seq() + 1);
  EXPECT_EQ(hub.publish("t1", kB, "StatusChanged", "{}"), hub.base_seq() + 2);
  EXPECT_EQ(hub.publish("t2", kA, "StatusChanged", "{}"), hub.base_seq() + 1);
}

TEST_F(PushHubTest, TenantAndImageTopicsGetTheirEventsOnly) {
  PushHub hub({}, clock_);
  Recorder tenant, image, other;
  ASSERT_TRUE(hub.subscribe(&tenant, 1, "t1", "tenant", std::nullopt).ok());
  ASSERT_TRUE(hub.subscribe(&image, 2, "t1", "image:" + kA, std::nullopt).ok());
  ASSERT_TRUE(hub.subscribe(&other, 3, "t2", "tenant", std::nullopt).ok());
  hub.publish("t1", kA, "StatusChanged", R"({"x":1})");
  hub.publish("t1", kB, "ProcessingCompleted", R"({"y":2})");
  ASSERT_EQ(tenant.got.size(), 2u);
  ASSERT_EQ(image.got.size(), 1u);
  EXPECT_TRUE(other.got.empty());
  EXPECT_EQ(image.got[0].first, 2u);
  auto frame = nlohmann::json::parse(image.got[0].second->frame_for("image:" + kA));
  EXPECT_EQ(frame["type"], "event");
  EXPECT_EQ(frame["topic"], "image:" + kA);
  EXPECT_EQ(frame["event"], "StatusChanged");
  EXPECT_EQ(frame["data"]["x"], 1);
  EXPECT_EQ(frame["seq"], hub.base_seq() + 1);
  EXPECT_EQ(nlohmann::json::parse(tenant.got[1].second->frame_for("tenant"))["topic"], "tenant");
}

TEST_F(PushHubTest, SinceReplaysTheMissedEventsOfTheTopicAndStaleSeqsReset) {
  PushHub hub({}, clock_);
  const uint64_t s1 = hub.publish("t1", kA, "StatusChanged", "{}");
  hub.publish("t1", kB, "StatusChanged", "{}");
  const uint64_t s3 = hub.publish("t1", kA, "StatusChanged", "{}");
  Recorder r;
  auto all = hub.subscribe(&r, 1, "t1", "tenant", s1);
  ASSERT_TRUE(all.ok());
  EXPECT_FALSE(all->reset);
  EXPECT_EQ(all->seq, s3);
  ASSERT_EQ(all->replay.size(), 2u);
  EXPECT_EQ(all->replay[0]->seq, s1 + 1);
  auto mine = hub.subscribe(&r, 2, "t1", "image:" + kA, hub.base_seq());
  ASSERT_EQ(mine->replay.size(), 2u);  // s1 and s3, not kB's
  EXPECT_EQ(mine->replay[1]->seq, s3);
  EXPECT_TRUE(hub.subscribe(&r, 3, "t1", "tenant", s3)->replay.empty());  // up to date
  EXPECT_TRUE(hub.subscribe(&r, 4, "t1", "tenant", 5)->reset);              // another run's seq
  EXPECT_TRUE(hub.subscribe(&r, 5, "t1", "tenant", s3 + 100)->reset);       // a later-started process's
  EXPECT_FALSE(hub.subscribe(&r, 1, "t1", "tenant", std::nullopt).ok());   // id in use
}

TEST_F(PushHubTest, HistoryIsBoundedInCountAndAgeAndOlderSinceResets) {
  PushHubOptions o;
  o.history_events = 3;
  o.history_age = 60s;
  PushHub hub(o, clock_);
  std::vector<uint64_t> seqs;
  for (int i = 0; i < 5; ++i) seqs.push_back(hub.publish("t1", kA, "StatusChanged", "{}"));
  EXPECT_EQ(hub.history_size(), 3u);
  Recorder r;
  EXPECT_TRUE(hub.subscribe(&r, 1, "t1", "tenant", seqs[0])->reset);  // seqs[1] is gone
  EXPECT_EQ(hub.subscribe(&r, 2, "t1", "tenant", seqs[1])->replay.size(), 3u);
  clock_.advance(61s);
  EXPECT_TRUE(hub.subscribe(&r, 3, "t1", "tenant", seqs[3])->reset);
  EXPECT_EQ(hub.history_size(), 0u);
}

TEST_F(PushHubTest, UnsubscribeStopsDeliveryAndConnectionsAreCountedPerTenant) {
  PushHubOptions o;
  o.max_connections_per_tenant = 2;
  PushHub hub(o, clock_);
  Recorder r;
  ASSERT_TRUE(hub.subscribe(&r, 1, "t1", "tenant", std::nullopt).ok());
  ASSERT_TRUE(hub.subscribe(&r, 2, "t1", "image:" + kA, std::nullopt).ok());
  EXPECT_EQ(hub.subscriptions(), 2u);
  hub.unsubscribe(&r, 1);
  hub.publish("t1", kA, "StatusChanged", "{}");
  ASSERT_EQ(r.got.size(), 1u);
  EXPECT_EQ(r.got[0].first, 2u);
  hub.unsubscribe_all(&r);
  hub.publish("t1", kA, "StatusChanged", "{}");
  EXPECT_EQ(r.got.size(), 1u);
  EXPECT_EQ(hub.subscriptions(), 0u);
  EXPECT_TRUE(hub.open_connection("t1"));
  EXPECT_TRUE(hub.open_connection("t1"));
  EXPECT_FALSE(hub.open_connection("t1"));
  EXPECT_TRUE(hub.open_connection("t2"));
  hub.close_connection("t1");
  EXPECT_TRUE(hub.open_connection("t1"));
  EXPECT_FALSE(hub.subscribe(&r, 9, "t1", "images", std::nullopt).ok());
}

}  // namespace
}  // namespace deeplens::api
