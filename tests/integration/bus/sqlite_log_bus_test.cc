// The embedded event bus on a real SQLite file: consumer groups, partitioning by key, commits,
// redelivery, rewind, retention and lag.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>

#include "bus/sqlite_log/sqlite_log_bus.h"
#include "support/pipeline_harness.h"

namespace deeplens {
namespace {

using namespace std::chrono_literals;

class SqliteLogBusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::make_temp_dir("deeplens-bus");
    db_ = std::move(SqliteDatabase::open(dir_ / "bus.db")).value();
    SqliteLogOptions o;
    o.partitions = 4;
    o.retention = 0ms;  // trim as soon as every group consumed (retention has its own test)
    bus_ = std::move(SqliteLogBus::open(*db_, clock_, random_, o)).value();
  }
  void TearDown() override {
    bus_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::unique_ptr<Consumer> consumer(const std::string& group, size_t batch = 100) {
    ConsumerOptions o;
    o.group = group;
    o.topics = {"t"};
    o.max_batch = batch;
    return std::move(bus_->subscribe(o)).value();
  }
  void publish(const std::string& key, const std::string& payload) {
    ASSERT_TRUE(bus_->publish({"t", key, payload, {{"eventType", "x"}, {"tenantId", "acme"}}}).ok());
  }
  std::vector<BusMessage> drain(Consumer& c, size_t want, std::chrono::milliseconds deadline = 5s) {
    std::vector<BusMessage> got;
    testing::wait_until([&] {
      auto batch = c.poll(50ms);
      if (batch) got.insert(got.end(), batch->begin(), batch->end());
      return got.size() >= want;
    }, deadline);
    return got;
  }

  std::filesystem::path dir_;
  SystemClock clock_;
  SystemRandom random_;
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteLogBus> bus_;
};

TEST_F(SqliteLogBusTest, DeliversKeyHeadersAndPayload) {
  auto c = consumer("g");
  publish("img_1", "hello");
  auto got = drain(*c, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].key, "img_1");
  EXPECT_EQ(got[0].payload, "hello");
  EXPECT_EQ(got[0].header("tenantId"), "acme");
  EXPECT_EQ(got[0].partition, bus_->partition_for("img_1"));
}

TEST_F(SqliteLogBusTest, TwoMembersOfAGroupSplitTheKeysAndKeepPerKeyOrder) {
  auto a = consumer("g");
  auto b = consumer("g");
  for (int i = 0; i < 40; ++i) publish("key-" + std::to_string(i % 8), std::to_string(i));
  std::vector<BusMessage> got_a, got_b;
  ASSERT_TRUE(testing::wait_until([&] {
    for (auto [consumer, got] : {std::make_pair(a.get(), &got_a), std::make_pair(b.get(), &got_b)}) {
      auto batch = consumer->poll(20ms);
      if (batch)
        for (auto& m : *batch) {
          got->push_back(m);
          EXPECT_TRUE(consumer->commit(m).ok());
        }
    }
    return got_a.size() + got_b.size() == 40;
  }, 10s));
  EXPECT_FALSE(got_a.empty());
  EXPECT_FALSE(got_b.empty());
  std::map<std::string, std::string> owner;
  std::map<std::string, int> last;
  for (auto* got : {&got_a, &got_b})
    for (const auto& m : *got) {
      const std::string who = got == &got_a ? "a" : "b";
      EXPECT_TRUE(owner.emplace(m.key, who).first->second == who) << m.key << " went to both members";
      const int n = std::stoi(m.payload);
      auto it = last.find(m.key);
      if (it != last.end()) {
        EXPECT_GT(n, it->second) << "order of " << m.key;
      }
      last[m.key] = n;
    }
}

TEST_F(SqliteLogBusTest, UncommittedMessagesAreRedeliveredAndCommittedOnesAreNot) {
  {
    auto c = consumer("g");
    for (int i = 0; i < 5; ++i) publish("k", std::to_string(i));
    auto got = drain(*c, 5);
    ASSERT_EQ(got.size(), 5u);
    ASSERT_TRUE(c->commit(got[2]).ok());  // 0..2 done, 3..4 not
    c->close();
  }
  auto again = consumer("g");
  auto got = drain(*again, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].payload, "3");
  EXPECT_EQ(got[1].payload, "4");
}

TEST_F(SqliteLogBusTest, RewindRedeliversFromTheGivenMessage) {
  auto c = consumer("g");
  for (int i = 0; i < 3; ++i) publish("k", std::to_string(i));
  auto got = drain(*c, 3);
  ASSERT_EQ(got.size(), 3u);
  c->rewind(got[1]);
  auto again = drain(*c, 2);
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[0].payload, "1");
}

TEST_F(SqliteLogBusTest, EveryGroupGetsEveryMessageAndLagCountsTheRest) {
  auto g1 = consumer("g1");
  auto g2 = consumer("g2");
  for (int i = 0; i < 6; ++i) publish("k" + std::to_string(i), "m");
  auto a = drain(*g1, 6);
  auto b = drain(*g2, 6);
  EXPECT_EQ(a.size(), 6u);
  EXPECT_EQ(b.size(), 6u);
  for (const auto& m : a) ASSERT_TRUE(g1->commit(m).ok());
  EXPECT_EQ(*bus_->lag("g1", {"t"}), 0);
  EXPECT_EQ(*bus_->lag("g2", {"t"}), 6);
  EXPECT_EQ(*bus_->trim(), 0) << "g2 has not consumed anything yet";
  for (const auto& m : b) ASSERT_TRUE(g2->commit(m).ok());
  EXPECT_EQ(*bus_->trim(), 6);
  EXPECT_EQ(*bus_->stored_messages(), 0);
}

TEST(SqliteLogBusRetention, AGroupThatJoinsLaterStartsAtTheOldestMessageAndFindsTheRetainedOnes) {
  const auto dir = testing::make_temp_dir("deeplens-bus-retention");
  auto db = std::move(SqliteDatabase::open(dir / "bus.db")).value();
  ManualClock clock(Timestamp(std::chrono::hours(24 * 365 * 56)));
  SystemRandom random;
  SqliteLogOptions o;
  o.partitions = 2;
  o.retention = std::chrono::hours(6);
  auto bus = std::move(SqliteLogBus::open(*db, clock, random, o)).value();
  auto subscribe = [&](const std::string& group) {
    return std::move(bus->subscribe(ConsumerOptions{group, {"t"}, 100})).value();
  };
  auto drain = [](Consumer& c, size_t want) {
    std::vector<BusMessage> got;
    testing::wait_until([&] {
      auto batch = c.poll(50ms);
      if (batch) got.insert(got.end(), batch->begin(), batch->end());
      return got.size() >= want;
    }, 5s);
    return got;
  };
  auto early = subscribe("early");
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(bus->publish({"t", "k" + std::to_string(i), "old" + std::to_string(i), {}}).ok());
  for (const auto& m : drain(*early, 4)) ASSERT_TRUE(early->commit(m).ok());
  // Everything is consumed by the only group so far, but younger than the retention: kept.
  EXPECT_EQ(*bus->trim(), 0);
  auto late = subscribe("late");  // a new stage, started an hour later
  clock.advance(std::chrono::hours(1));
  EXPECT_EQ(drain(*late, 4).size(), 4u) << "a group that joined later lost messages within the retention";

  // Past the retention and consumed by every group that joined: deleted. A group that joins after
  // that starts at the oldest message still stored, so it sees only what came later.
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(bus->publish({"t", "k" + std::to_string(i), "new" + std::to_string(i), {}}).ok());
  for (const auto& m : drain(*early, 2)) ASSERT_TRUE(early->commit(m).ok());
  late->close();  // "late" never committed: its place still holds the old messages
  clock.advance(std::chrono::hours(6));
  EXPECT_EQ(*bus->trim(), 0) << "a group that joined and has not consumed must keep its messages";
  auto late_again = subscribe("late");
  auto all = drain(*late_again, 6);
  ASSERT_EQ(all.size(), 6u);
  for (const auto& m : all) ASSERT_TRUE(late_again->commit(m).ok());
  EXPECT_EQ(*bus->trim(), 4);  // the old ones: consumed by both and older than 6 h; the new ones are not
  auto newest = subscribe("newest");
  auto rest = drain(*newest, 2);
  ASSERT_EQ(rest.size(), 2u);
  for (const auto& m : rest) EXPECT_EQ(m.payload.substr(0, 3), "new");
  early->close();
  late_again->close();
  newest->close();
  bus.reset();
  std::filesystem::remove_all(dir);
}

TEST_F(SqliteLogBusTest, PollWakesUpPromptlyOnPublishAndOnWake) {
  auto c = consumer("g");
  std::thread publisher([&] {
    std::this_thread::sleep_for(100ms);
    publish("k", "late");
  });
  const auto t0 = std::chrono::steady_clock::now();
  auto got = c->poll(5s);
  publisher.join();
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 1u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s) << "woken by the publish, not the timeout";

  std::thread waker([&] {
    std::this_thread::sleep_for(100ms);
    c->wake();
  });
  const auto t1 = std::chrono::steady_clock::now();
  auto empty = c->poll(5s);
  waker.join();
  EXPECT_TRUE(empty.ok() && empty->empty());
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 2s);
}

// wake() also ends the next poll(): a wake that lands while the consumer is between two waits (or
// before it polls at all) must not be lost, or stop() would wait a whole poll timeout.
TEST_F(SqliteLogBusTest, AWakeBeforePollEndsTheNextPollPromptly) {
  auto c = consumer("g");
  c->wake();
  const auto t0 = std::chrono::steady_clock::now();
  auto got = c->poll(5s);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->empty());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  publish("k", "after");  // the wake is spent: the poll after it waits for news as usual
  auto next = c->poll(5s);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->size(), 1u);
}

TEST_F(SqliteLogBusTest, BatchesAreBounded) {
  auto c = consumer("g", 4);
  for (int i = 0; i < 10; ++i) publish("k", std::to_string(i));
  ASSERT_TRUE(testing::wait_until([&] { return bus_->lag("g", {"t"}).value() == 10; }, 2s));
  auto batch = c->poll(1s);
  ASSERT_TRUE(batch.ok());
  EXPECT_LE(batch->size(), 4u);
  EXPECT_FALSE(batch->empty());
}

// A consumer waiting in poll() is woken by the commit of every append in this process, even when
// other transactions commit at the same moment: the wake-up belongs to the transaction that
// appended. (It used to be a bus-wide flag, which another transaction's commit could consume
// before the append was visible; the consumer then slept until the cross-process poll.)
TEST(SqliteLogBusWakeUp, EveryAppendWakesAWaitingConsumerWhileOtherTransactionsCommit) {
  const auto dir = testing::make_temp_dir("deeplens-bus-wake");
  SystemClock clock;
  SystemRandom random;
  auto db = std::move(SqliteDatabase::open(dir / "bus.db")).value();
  SqliteLogOptions o;
  o.partitions = 1;
  o.cross_process_poll = 60s;  // a missed wake-up would wait this long
  auto bus = std::move(SqliteLogBus::open(*db, clock, random, o)).value();
  ASSERT_TRUE(db->write([](SqliteConnection& c) { return c.exec("CREATE TABLE noise (n INTEGER)"); }).ok());
  ConsumerOptions co;
  co.group = "g";
  co.topics = {"t"};
  auto consumer = std::move(bus->subscribe(co)).value();

  std::atomic<bool> stop{false};
  std::thread noise([&] {  // commits without appending, as fast as it can
    while (!stop) (void)db->write([](SqliteConnection& c) { return c.exec("INSERT INTO noise VALUES (1)"); });
  });
  std::atomic<int> received{0};
  std::thread reader([&] {
    while (!stop) {
      auto batch = consumer->poll(60s);
      if (batch) received += static_cast<int>(batch->size());
    }
  });
  int stalled_at = -1;
  for (int i = 0; i < 300 && stalled_at < 0; ++i) {
    ASSERT_TRUE(bus->publish({"t", "k", std::to_string(i), {}}).ok());
    if (!testing::wait_until([&] { return received.load() > i; }, 3s)) stalled_at = i;
  }
  stop = true;
  consumer->wake();
  noise.join();
  reader.join();
  EXPECT_EQ(stalled_at, -1) << "message " << stalled_at << " was not delivered within 3 s of its commit";
  consumer.reset();
  bus.reset();
  db.reset();
  std::filesystem::remove_all(dir);
}


TEST_F(SqliteLogBusTest, BroadcastConsumersEachGetEveryNewMessageAndNoneFromBefore) {
  publish("img_old", "before");
  ConsumerOptions o;
  o.group = "hub";
  o.topics = {"t"};
  o.max_batch = 100;
  o.broadcast = true;
  auto x = std::move(bus_->subscribe(o)).value();
  auto y = std::move(bus_->subscribe(o)).value();
  auto group = consumer("stage");  // a normal group beside them
  for (int i = 0; i < 20; ++i) publish("img_" + std::to_string(i), std::to_string(i));
  auto gx = drain(*x, 20), gy = drain(*y, 20);
  ASSERT_EQ(gx.size(), 20u);  // both members see every partition: no split
  ASSERT_EQ(gy.size(), 20u);
  for (const auto& m : gx) EXPECT_NE(m.payload, "before");
  EXPECT_TRUE(x->commit(gx.back()).ok());
  EXPECT_EQ(drain(*group, 21).size(), 21u);  // a normal group still starts at the oldest message
}

}  // namespace
}  // namespace deeplens

namespace deeplens {
namespace {

// Flow control for the priority lanes: a paused topic delivers nothing while another flows, and
// resumes right after the last message poll() returned, nothing skipped and nothing twice.
TEST_F(SqliteLogBusTest, APausedTopicWaitsWhileAnotherFlowsAndResumesWhereItStopped) {
  ConsumerOptions o;
  o.group = "g";
  o.topics = {"t", "u"};
  o.max_batch = 5;
  auto c = std::move(bus_->subscribe(o)).value();
  for (int i = 0; i < 30; ++i) publish("k" + std::to_string(i % 4), std::to_string(i));
  auto first = c->poll(1s);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 5u);
  c->pause("t", true);
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(bus_->publish({"u", "x", "u-" + std::to_string(i), {}}).ok());
  auto during = drain(*c, 7, 2s);
  ASSERT_EQ(during.size(), 7u);
  for (const auto& m : during) EXPECT_EQ(m.topic, "u");
  auto nothing = c->poll(200ms);
  ASSERT_TRUE(nothing.ok());
  EXPECT_TRUE(nothing->empty());
  c->pause("t", false);
  auto rest = drain(*c, 25);
  std::vector<int> seen;
  for (const auto& m : *first) seen.push_back(std::stoi(m.payload));
  for (const auto& m : rest) {
    EXPECT_EQ(m.topic, "t");
    seen.push_back(std::stoi(m.payload));
  }
  std::sort(seen.begin(), seen.end());
  ASSERT_EQ(seen.size(), 30u);
  for (int i = 0; i < 30; ++i) EXPECT_EQ(seen[static_cast<size_t>(i)], i);
}

}  // namespace
}  // namespace deeplens
