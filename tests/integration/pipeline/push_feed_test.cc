// PushFeed on the real embedded pipeline: every transition of every image reaches the hub, in
// order, with one ProcessingCompleted per image — also when the bus delivers a completion again.
// Run under ThreadSanitizer by scripts/test (the feed thread, the stages and the listener).
#include "api/push_feed.h"

#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "events/topics.h"
#include "support/pipeline_harness.h"
#include "support/test_extractor.h"

namespace deeplens {
namespace {

using namespace std::chrono_literals;

struct Recorder final : api::PushListener {
  std::mutex mu;
  std::vector<api::PushEventPtr> got;
  void on_event(uint64_t, const api::PushEventPtr& e) override {
    std::lock_guard lock(mu);
    got.push_back(e);
  }
  size_t count(const std::string& name) {
    std::lock_guard lock(mu);
    return static_cast<size_t>(std::count_if(got.begin(), got.end(), [&](const auto& e) { return e->name == name; }));
  }
};

TEST(PushFeed, EveryTransitionReachesTheHubInOrderAndEachImageCompletesOnce) {
  const auto dir = testing::make_temp_dir("deeplens-push");
  SystemClock clock;
  SystemRandom random;
  testing::TestExtractor extractor{"test", 16};
  app::NodeOptions o;
  o.data_dir = dir;
  o.run.poll_timeout = 200ms;
  auto node = std::move(app::Node::open(o, [&](const std::string& n) -> Extractor* { return n == "test" ? &extractor : nullptr; },
                                        clock, random)).value();
  api::PushHub hub({}, clock);
  api::PushFeed feed(node->bus(), node->store(), hub, node->metrics());
  ASSERT_TRUE(feed.start().ok());
  Recorder tenant;
  ASSERT_TRUE(hub.subscribe(&tenant, 1, "acme", "tenant", std::nullopt).ok());
  ASSERT_TRUE(node->start_pipeline().ok());
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    auto up = testing::upload_bytes(node->context(), "acme", "image " + std::to_string(i), {"test"});
    ASSERT_TRUE(up.ok()) << up.error().to_string();
    ids.push_back(up->image.image_id);
  }
  ASSERT_TRUE(testing::wait_until([&] { return tenant.count("ProcessingCompleted") == ids.size(); }, 30s));
  // The bus delivers a completion again (at-least-once): nothing more reaches clients.
  std::string payload;
  {
    std::lock_guard lock(tenant.mu);
    for (const auto& e : tenant.got)
      if (e->name == "ProcessingCompleted") payload = e->data;
  }
  const std::string again_id = nlohmann::json::parse(payload)["data"]["imageId"];
  ASSERT_TRUE(node->bus().publish({std::string(topics::kProcessingCompleted), again_id, payload, {}}).ok());
  std::this_thread::sleep_for(500ms);  // a wrong second completion would be published by now
  feed.stop();
  node->stop();

  std::map<std::string, std::vector<std::string>> transitions;
  std::map<std::string, int> completions;
  uint64_t last_seq = 0;
  for (const auto& e : tenant.got) {
    EXPECT_GT(e->seq, last_seq);
    last_seq = e->seq;
    auto data = nlohmann::ordered_json::parse(e->data);
    if (e->name == "StatusChanged") {
      transitions[data["imageId"]].push_back(data["transition"]);
    } else {
      ASSERT_EQ(e->name, "ProcessingCompleted");
      EXPECT_EQ(e->data, data.dump()) << "the event exactly as on the bus";
      ++completions[data["data"]["imageId"]];
    }
  }
  const std::vector<std::string> expected{"uploaded", "step.started", "step.completed", "step.started", "completed"};
  for (const auto& id : ids) {
    EXPECT_EQ(transitions[id], expected) << id;
    EXPECT_EQ(completions[id], 1) << id;
  }
  node.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace deeplens
