// Two outbox relays sharing one outbox, publishing to a Kafka broker that stalls: each publish
// takes longer than the claim lease used to be (5 s), so the second relay used to take the first
// one's rows over mid-publish and publish them again. With the lease outlasting a publish (and
// never passing another relay's rows) every event reaches Kafka once, in outbox order per key.
#include <gtest/gtest.h>

#include <map>

#include "integration/kafka/kafka_test_support.h"
#include "pipeline/outbox_relay.h"
#include "store/sqlite/sqlite_metadata_store.h"
#include "support/pipeline_harness.h"

namespace deeplens {
namespace {

using namespace std::chrono_literals;

TEST(OutboxRelayOnKafka, TwoRelaysAndAStallingBrokerPublishEveryEventOnceInOrder) {
  const std::string topic = "deeplens.relay.test";
  DevKafkaBrokerOptions bo;
  bo.brokers = 1;
  bo.topics = {topic};
  bo.partitions = 2;
  bo.replication_factor = 1;
  auto broker = DevKafkaBroker::start(bo);
  ASSERT_TRUE(broker.ok()) << broker.error().to_string();
  auto options = testing::dev_bus_options((*broker)->bootstrap_servers());
  options.topics = {topic};
  options.publish_timeout = 10s;  // the default: a stalled publish may take this long
  auto bus = KafkaBus::open(options);
  ASSERT_TRUE(bus.ok()) << bus.error().to_string();

  const auto dir = testing::make_temp_dir("deeplens-relay-kafka");
  SystemClock clock;
  auto db = std::move(SqliteDatabase::open(dir / "deeplens.db")).value();
  auto store = std::move(SqliteMetadataStore::open(*db, clock)).value();  // events stay in the outbox
  constexpr int kEvents = 40;
  ASSERT_TRUE(store->transact([&](MetadataTx& tx) -> Status {
    for (int i = 0; i < kEvents; ++i)
      if (auto st = tx.enqueue(OutboxMessage{topic, "img_" + std::to_string(i % 4), std::to_string(i), {}}); !st) return st;
    return {};
  }).ok());

  // Every response of the only broker now takes 6 s: longer than the old 5 s lease.
  ASSERT_TRUE((*broker)->set_broker_rtt(1, 6000ms).ok());
  Metrics metrics;
  OutboxRelayOptions ro;
  ro.batch = 16;
  ro.idle_poll = 50ms;
  ro.initial_backoff = 50ms;
  ro.relay_id = "relay-a";
  OutboxRelay a(*store, **bus, metrics, ro);
  ro.relay_id = "relay-b";
  OutboxRelay b(*store, **bus, metrics, ro);
  ASSERT_TRUE(a.start().ok());
  ASSERT_TRUE(b.start().ok());
  ASSERT_TRUE(testing::wait_until([&] { auto n = store->outbox_backlog(); return n.ok() && *n == 0; }, 120s));
  a.stop();
  b.stop();
  EXPECT_EQ(a.published() + b.published(), kEvents) << "an event was published by both relays";
  ASSERT_TRUE((*broker)->set_broker_rtt(1, 0ms).ok());

  // An independent read of the topic: each event once, and per key in the order enqueued.
  auto consumer = (*bus)->subscribe(ConsumerOptions{"relay-audit", {topic}, 64});
  ASSERT_TRUE(consumer.ok()) << consumer.error().to_string();
  auto got = testing::drain(**consumer, kEvents + 1, 30s);
  std::map<std::string, std::vector<int>> by_key;
  for (const auto& m : got) by_key[m.key].push_back(std::stoi(m.payload));
  EXPECT_EQ(got.size(), static_cast<size_t>(kEvents));
  for (const auto& [key, seq] : by_key) {
    EXPECT_TRUE(std::is_sorted(seq.begin(), seq.end())) << key;
    EXPECT_EQ(seq.size(), static_cast<size_t>(kEvents / 4)) << key;
  }
  (*consumer)->close();
  bus->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace deeplens
