// The whole pipeline at scale in one test: metadata and outbox on a real PostgreSQL 15 server,
// events on the Kafka-protocol dev broker, assembled by app::Node exactly as `deeplens serve
// --metadata postgresql://... --bus kafka://...` does (issue #7 with #6).
#include <gtest/gtest.h>

#include "bus/kafka/dev_broker.h"
#include "kafka_test_support.h"
#include "support/pipeline_harness.h"
#include "support/postgres_server.h"
#include "support/test_extractor.h"

namespace deeplens {
namespace {

using namespace std::chrono_literals;

TEST(PostgresKafkaPipeline, ImagesCompleteWithMetadataOnPostgresAndEventsOnKafka) {
  testing::PostgresServer pg;
  const std::string url = pg.create_database();
  DevKafkaBrokerOptions bo;
  bo.partitions = 4;
  for (auto t : topics::kAll) bo.topics.emplace_back(t);
  auto broker = DevKafkaBroker::start(bo);
  ASSERT_TRUE(broker.ok()) << broker.error().to_string();

  const auto dir = testing::make_temp_dir("deeplens-pg-kafka");
  SystemClock clock;
  SystemRandom random;
  testing::TestExtractor extractor("test", 16);
  app::NodeOptions o;
  o.data_dir = dir;
  o.postgres_url = url;
  o.kafka = testing::dev_bus_options((*broker)->bootstrap_servers());
  for (auto t : topics::kAll) o.kafka->topics.emplace_back(t);
  o.pipeline.retry = RetryPolicy{3, 20, 1};
  o.run.poll_timeout = 200ms;
  auto node = app::Node::open(o, [&](const std::string& n) -> Extractor* { return n == "test" ? &extractor : nullptr; },
                              clock, random);
  ASSERT_TRUE(node.ok()) << node.error().to_string();
  auto audit = std::make_unique<testing::CompletionAudit>((*node)->bus());
  ASSERT_TRUE((*node)->start_pipeline().ok());

  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) {
    auto r = testing::upload_bytes((*node)->context(), "acme-corp", "pg-image-" + std::to_string(i), {"test"});
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    ids.push_back(r->image.image_id);
  }
  ASSERT_TRUE(testing::wait_until([&] { return testing::count_status((*node)->store(), "completed") == 40; }, 120s))
      << testing::count_status((*node)->store(), "completed");
  ASSERT_TRUE(testing::wait_until([&] { return audit->drain().size() == 40; }, 30s));
  for (const auto& [image, n] : audit->drain()) EXPECT_EQ(n, 1) << image;
  EXPECT_EQ((*node)->vectors().find_collection(collection_name("acme-corp", "test"))->count(), 40u);
  auto backlog = (*node)->store().outbox_backlog();
  ASSERT_TRUE(backlog.ok());
  EXPECT_EQ(*backlog, 0);
  audit.reset();
  node->reset();
  std::filesystem::remove_all(dir);
}

TEST(PostgresKafkaPipeline, PostgresMetadataWithoutKafkaIsRefusedWithAClearError) {
  SystemClock clock;
  SystemRandom random;
  const auto dir = testing::make_temp_dir("deeplens-pg-nokafka");
  app::NodeOptions o;
  o.data_dir = dir;
  o.postgres_url = "postgresql://postgres@127.0.0.1:1/none";
  auto node = app::Node::open(o, [](const std::string&) -> Extractor* { return nullptr; }, clock, random);
  ASSERT_FALSE(node.ok());
  EXPECT_EQ(node.error().context.at("key"), "metadata.url");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace deeplens
