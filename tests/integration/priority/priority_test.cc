// Priority lanes end to end (issue #17 acceptance), on the embedded log and on Kafka: a high
// upload overtakes a low backlog, low keeps its share under continuous high load, and
// estimatedTimeRemaining tracks the real remaining time of images in a backlog.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "app/node.h"
#include "bus/kafka/dev_broker.h"
#include "integration/kafka/kafka_test_support.h"
#include "pipeline/status.h"
#include "support/pipeline_harness.h"
#include "support/test_extractor.h"

namespace deeplens {
namespace {

using namespace std::chrono_literals;

class PriorityLanes : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = testing::make_temp_dir("deeplens-priority");
    app::NodeOptions o;
    o.data_dir = dir_;
    o.run.poll_timeout = 200ms;
    o.run.extract_batch = 8;
    o.bus.retention = 0ms;
    if (GetParam() == "kafka") {
      DevKafkaBrokerOptions bo;
      bo.partitions = 2;
      for (auto t : topics::kAll) bo.topics.emplace_back(t);
      auto broker = DevKafkaBroker::start(bo);
      ASSERT_TRUE(broker.ok()) << broker.error().to_string();
      broker_ = std::move(broker).value();
      o.kafka = testing::dev_bus_options(broker_->bootstrap_servers());
      for (auto t : topics::kAll) o.kafka->topics.emplace_back(t);
    }
    auto node = app::Node::open(o, [this](const std::string& n) -> Extractor* { return n == "test" ? &extractor_ : nullptr; },
                                clock_, random_);
    ASSERT_TRUE(node.ok()) << node.error().to_string();
    node_ = std::move(node).value();
  }
  void TearDown() override {
    node_.reset();
    broker_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string upload(Priority p) {
    auto r = testing::upload_bytes(node_->context(), "acme-corp", std::string(priority_name(p)) + "-" + std::to_string(next_++),
                                   {"test"}, true, p);
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    return r ? r->image.image_id : "";
  }
  // When the image became searchable (ms since the epoch); -1 while it is not.
  int64_t searchable_at(const std::string& id) {
    auto image = node_->store().get_image("acme-corp", id);
    if (!image || !image->searchable_after) return -1;
    return image->searchable_after->time_since_epoch().count();
  }
  bool all_searchable(const std::vector<std::string>& ids) {
    return std::all_of(ids.begin(), ids.end(), [&](const std::string& id) { return searchable_at(id) >= 0; });
  }

  std::filesystem::path dir_;
  SystemClock clock_;
  SystemRandom random_;
  // 10 ms per image: extraction is the slow stage, as with a real model.
  testing::TestExtractor extractor_{"test", 16, 10ms};
  std::unique_ptr<DevKafkaBroker> broker_;
  std::unique_ptr<app::Node> node_;
  int next_ = 0;
};

TEST_P(PriorityLanes, TenHighUploadsCompleteBeforeATenthOfALowBacklogOfFiveHundred) {
  std::vector<std::string> low, high;
  for (int i = 0; i < 500; ++i) low.push_back(upload(Priority::kLow));
  ASSERT_TRUE(node_->start_pipeline().ok());
  for (int i = 0; i < 10; ++i) high.push_back(upload(Priority::kHigh));
  ASSERT_TRUE(testing::wait_until([&] { return all_searchable(high); }, 120s));
  int64_t last_high = 0;
  for (const auto& id : high) last_high = std::max(last_high, searchable_at(id));
  const auto low_before = std::count_if(low.begin(), low.end(), [&](const std::string& id) {
    const int64_t t = searchable_at(id);
    return t >= 0 && t <= last_high;
  });
  EXPECT_LE(low_before, 100) << "of the 500 low images " << low_before << " completed before the last high one";
  // And the backlog itself is not lost behind them.
  EXPECT_TRUE(testing::wait_until([&] { return all_searchable(low); }, 120s));
}

TEST_P(PriorityLanes, LowKeepsAtLeastATenthOfTheThroughputUnderContinuousHighLoad) {
  std::vector<std::string> low;
  for (int i = 0; i < 300; ++i) low.push_back(upload(Priority::kLow));
  ASSERT_TRUE(node_->start_pipeline().ok());
  // Kafka's groups take a moment to form: load the pipeline once it runs.
  ASSERT_TRUE(testing::wait_until([&] { return testing::count_status(node_->store(), "completed") >= 10; }, 60s));
  // High uploads faster than extraction can take them, for 4 s.
  std::vector<std::string> high;
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < 4s) {
    high.push_back(upload(Priority::kHigh));
    std::this_thread::sleep_for(2ms);
  }
  const int64_t from = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count() - 3000;  // the last 3 s
  const int64_t to = from + 3000;
  auto in_window = [&](const std::vector<std::string>& ids) {
    return std::count_if(ids.begin(), ids.end(), [&](const std::string& id) {
      const int64_t t = searchable_at(id);
      return t >= from && t <= to;
    });
  };
  const auto high_done = in_window(high), low_done = in_window(low);
  const auto high_waiting = std::count_if(high.begin(), high.end(), [&](const std::string& id) { return searchable_at(id) < 0; });
  // The load was continuous: high images were still queued when it ended.
  ASSERT_GT(high_waiting, 20) << "the high load did not saturate extraction (" << high.size() << " uploaded)";
  ASSERT_GT(high_done + low_done, 30);
  const double low_share = static_cast<double>(low_done) / static_cast<double>(high_done + low_done);
  EXPECT_GE(low_share, 0.10) << low_done << " low and " << high_done << " high completed in the window";
  // 1/7 expected on the embedded log. On Kafka the high images of this load also wait upstream
  // (orchestration, the relay, each fetch), so extraction's high lane runs dry at times and the
  // work-conserving scheduler gives those slots to low: low's share there was 0.14–0.71 (issue
  // #17 note), no bound on it is claimed.
  if (GetParam() == "embedded") {
    EXPECT_LE(low_share, 0.45) << "high should hold most of the slots while low and high are both queued";
  }
}

// The estimate on the embedded log. On Kafka the pipeline's rate itself varies more over a run
// this short (the relay, consumer fetches and three stages share two cores), and the estimate
// extrapolates the rate it observes: of the images more than 1 s from completion, 32% to 100%
// were within a factor of 2 in four runs of this test on Kafka (2026-12-04), so no bound is
// claimed there (bench/README.md has the longer bench run on both buses).
class PriorityEta : public PriorityLanes {};

TEST_P(PriorityEta, EstimatedTimeRemainingTracksTheRealRemainingTimeInABacklog) {
  std::vector<std::pair<std::string, Priority>> images;
  for (int i = 0; i < 480; ++i) images.emplace_back(upload(Priority::kLow), Priority::kLow);
  for (int i = 0; i < 240; ++i) images.emplace_back(upload(Priority::kNormal), Priority::kNormal);
  for (int i = 0; i < 80; ++i) images.emplace_back(upload(Priority::kHigh), Priority::kHigh);
  ASSERT_TRUE(node_->start_pipeline().ok());
  // The estimate extrapolates the rate it observes: sample in the steady state, once the
  // orchestrator has taken the whole backlog (its burst slows extraction at the start).
  ASSERT_TRUE(testing::wait_until([&] {
    return testing::count_status(node_->store(), "uploaded") == 0 && testing::count_status(node_->store(), "completed") >= 30;
  }, 60s));
  std::this_thread::sleep_for(1000ms);  // a rate to observe
  StatusOptions so;
  so.lane_weights = node_->context().options.lane_weights;
  struct Sample {
    std::string id;
    Priority lane;
    int64_t at_ms;
    int64_t eta_ms;
  };
  std::vector<Sample> samples;
  for (size_t i = 0; i < images.size(); i += 11) {
    auto view = load_status(node_->store(), "acme-corp", images[i].first, so);
    ASSERT_TRUE(view.ok()) << view.error().to_string();
    if (!view->estimated_time_remaining_ms) continue;  // already done
    EXPECT_EQ(view->priority, images[i].second);
    const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
    samples.push_back({images[i].first, images[i].second, now, *view->estimated_time_remaining_ms});
  }
  ASSERT_GT(samples.size(), 20u);
  std::vector<std::string> ids;
  for (const auto& [id, lane] : images) ids.push_back(id);
  ASSERT_TRUE(testing::wait_until([&] { return all_searchable(ids); }, 180s));
  // Each image more than 3 s from completion within a factor of 2, and the median of those more
  // than 1 s from it within 1.75 (measured since the lanes take partition heads by age: all within
  // 2 from 1 s on, the median 1.00-1.06 on an idle machine, 1.53 with a compiler running beside
  // it, whose share of the cores changes the rate the estimate extrapolates; bench/README.md,
  // "Priority lanes against FIFO"). Nearer the head it is batch granularity: a batch of 8 at the
  // test model's 10 ms each is 80 ms.
  const double factor = 2.0, median_factor = 1.75;
  std::vector<double> ratios;
  for (const auto& s : samples) {
    const int64_t actual = searchable_at(s.id) - s.at_ms;
    if (actual < 1000) continue;
    const double ratio = static_cast<double>(s.eta_ms) / static_cast<double>(actual);
    ratios.push_back(ratio);
    if (actual < 3000) continue;
    EXPECT_GE(ratio, 1.0 / factor) << priority_name(s.lane) << " image: estimated " << s.eta_ms << " ms, took " << actual << " ms";
    EXPECT_LE(ratio, factor) << priority_name(s.lane) << " image: estimated " << s.eta_ms << " ms, took " << actual << " ms";
  }
  ASSERT_GE(ratios.size(), 10u);
  std::sort(ratios.begin(), ratios.end());
  const double median = ratios[ratios.size() / 2];
  EXPECT_GE(median, 1.0 / median_factor);
  EXPECT_LE(median, median_factor);
}

INSTANTIATE_TEST_SUITE_P(Buses, PriorityLanes, ::testing::Values("embedded", "kafka"),
                         [](const auto& info) { return info.param; });
INSTANTIATE_TEST_SUITE_P(Bus, PriorityEta, ::testing::Values("embedded"), [](const auto& info) { return info.param; });

}  // namespace
}  // namespace deeplens
