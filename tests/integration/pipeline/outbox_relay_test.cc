// The outbox relay on a real SQLite outbox, with a bus that refuses one message: the relay marks
// only what the bus confirmed and starts the next round from the refused row, so every event is
// published, in order, and none is skipped.
#include <gtest/gtest.h>

#include <mutex>

#include "pipeline/outbox_relay.h"
#include "store/sqlite/sqlite_metadata_store.h"
#include "support/pipeline_harness.h"

namespace deeplens {
namespace {

using namespace std::chrono_literals;

// Publishes into a list; the `fail_at`-th publish() call (1-based) fails once. publish_batch() is
// EventBus's default (one publish() after another), the contract KafkaBus keeps with one wait.
class FlakyBus final : public EventBus {
 public:
  explicit FlakyBus(int fail_at) : fail_at_(fail_at) {}
  Status publish(const OutboxMessage& m) override {
    std::lock_guard lock(mu_);
    if (++calls_ == fail_at_) return Error(ErrorCode::kUnavailable, "broker hiccup");
    payloads_.push_back(m.payload);
    return {};
  }
  Result<std::unique_ptr<Consumer>> subscribe(const ConsumerOptions&) override {
    return Error(ErrorCode::kFailedPrecondition, "publish only");
  }
  Result<int64_t> lag(const std::string&, const std::vector<std::string>&) override { return int64_t{0}; }
  Status ping() override { return {}; }
  std::vector<std::string> payloads() {
    std::lock_guard lock(mu_);
    return payloads_;
  }

 private:
  std::mutex mu_;
  int fail_at_;
  int calls_ = 0;
  std::vector<std::string> payloads_;
};

TEST(OutboxRelay, ARefusedMessageIsPublishedAgainAndNothingAfterItIsSkipped) {
  const auto dir = testing::make_temp_dir("deeplens-relay");
  SystemClock clock;
  auto db = std::move(SqliteDatabase::open(dir / "deeplens.db")).value();
  auto store = std::move(SqliteMetadataStore::open(*db, clock)).value();  // no log: events stay in the outbox
  ASSERT_TRUE(store->transact([](MetadataTx& tx) -> Status {
    for (int i = 0; i < 5; ++i)
      if (auto st = tx.enqueue(OutboxMessage{"t", "k" + std::to_string(i), std::to_string(i), {}}); !st) return st;
    return {};
  }).ok());
  FlakyBus bus(3);
  Metrics metrics;
  OutboxRelayOptions o;
  o.initial_backoff = 10ms;
  OutboxRelay relay(*store, bus, metrics, o);
  ASSERT_TRUE(relay.start().ok());
  ASSERT_TRUE(testing::wait_until([&] { return bus.payloads().size() >= 5; }, 10s)) << bus.payloads().size();
  ASSERT_TRUE(testing::wait_until([&] { auto n = store->outbox_backlog(); return n.ok() && *n == 0; }, 10s));
  relay.stop();
  // "2" was refused on its first try and published on the next round, before "3" and "4".
  EXPECT_EQ(bus.payloads(), (std::vector<std::string>{"0", "1", "2", "3", "4"}));
  std::filesystem::remove_all(dir);
}

TEST(OutboxRelay, AfterAPartlyFailedBatchNoLaterRowOvertakesTheUnsentOnes) {
  const auto dir = testing::make_temp_dir("deeplens-relay");
  SystemClock clock;
  auto db = std::move(SqliteDatabase::open(dir / "deeplens.db")).value();
  auto store = std::move(SqliteMetadataStore::open(*db, clock)).value();
  ASSERT_TRUE(store->transact([](MetadataTx& tx) -> Status {
    for (int i = 0; i < 9; ++i)  // one key: every event of one image
      if (auto st = tx.enqueue(OutboxMessage{"t", "img_1", std::to_string(i), {}}); !st) return st;
    return {};
  }).ok());
  FlakyBus bus(3);  // the first batch (0, 1, 2): 0 and 1 delivered, 2 refused
  Metrics metrics;
  OutboxRelayOptions o;
  o.batch = 3;
  o.initial_backoff = 10ms;
  OutboxRelay relay(*store, bus, metrics, o);
  ASSERT_TRUE(relay.start().ok());
  ASSERT_TRUE(testing::wait_until([&] { auto n = store->outbox_backlog(); return n.ok() && *n == 0; }, 10s));
  relay.stop();
  // The relay's next round starts again at "2", which it still holds, instead of taking "3".."5".
  EXPECT_EQ(bus.payloads(), (std::vector<std::string>{"0", "1", "2", "3", "4", "5", "6", "7", "8"}));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace deeplens
