// A Node on Kafka whose pipeline is stopped and started again keeps publishing its outbox: stop()
// stops the relay with the stages, so start_pipeline() must start it again.
#include <gtest/gtest.h>

#include "app/node.h"
#include "bus/kafka/dev_broker.h"
#include "kafka_test_support.h"
#include "support/pipeline_harness.h"
#include "support/test_extractor.h"

namespace deeplens {
namespace {

using namespace std::chrono_literals;

TEST(KafkaNode, ImagesCompleteAfterThePipelineIsStoppedAndStartedAgain) {
  DevKafkaBrokerOptions bo;
  bo.partitions = 2;
  for (auto t : topics::kAll) bo.topics.emplace_back(t);
  auto broker = DevKafkaBroker::start(bo);
  ASSERT_TRUE(broker.ok()) << broker.error().to_string();
  const auto dir = testing::make_temp_dir("deeplens-kafka-node");
  SystemClock clock;
  SystemRandom random;
  testing::TestExtractor extractor("test", 16);
  app::NodeOptions o;
  o.data_dir = dir;
  o.kafka = testing::dev_bus_options((*broker)->bootstrap_servers());
  for (auto t : topics::kAll) o.kafka->topics.emplace_back(t);
  o.run.poll_timeout = 200ms;
  auto node = app::Node::open(o, [&](const std::string& n) -> Extractor* { return n == "test" ? &extractor : nullptr; },
                              clock, random);
  ASSERT_TRUE(node.ok()) << node.error().to_string();
  auto completed = [&] { return testing::count_status((*node)->store(), "completed"); };
  auto upload = [&](int i) {
    auto r = testing::upload_bytes((*node)->context(), "acme-corp", "restart-image-" + std::to_string(i), {"test"});
    ASSERT_TRUE(r.ok()) << r.error().to_string();
  };

  ASSERT_TRUE((*node)->start_pipeline().ok());
  upload(0);
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 1; }, 60s)) << completed();
  (*node)->stop();
  ASSERT_TRUE((*node)->start_pipeline().ok());
  upload(1);
  EXPECT_TRUE(testing::wait_until([&] { return completed() == 2; }, 60s))
      << "completed: " << completed() << ", outbox backlog: " << (*node)->store().outbox_backlog().value();
  node->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace deeplens
