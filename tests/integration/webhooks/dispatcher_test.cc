// WebhookDispatcher end to end inside one process: deliveries queued by real SQLite transactions
// are sent to a real HTTP server, signed, retried on failure, bounded per endpoint, and recorded.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "api/http_server.h"
#include "common/metrics.h"
#include "store/sqlite/sqlite_database.h"
#include "store/sqlite/sqlite_metadata_store.h"
#include "webhooks/dispatcher.h"
#include "webhooks/secret_box.h"
#include "webhooks/signature.h"

namespace deeplens::webhooks {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct Received {
  std::string id, timestamp, signature, body, path;
};

class DispatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "deeplens-dispatcher-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    db_ = std::move(SqliteDatabase::open(dir_ / "deeplens.db")).value();
    store_ = std::move(SqliteMetadataStore::open(*db_, clock_)).value();
    box_.emplace(SecretBox::from_key(std::string(32, 's')).value());
    api::HttpServerOptions o;
    o.listen = "127.0.0.1:0";
    o.spool_dir = dir_;
    o.threads = 8;
    server_ = std::make_unique<api::HttpServer>(
        o, [this](api::HttpRequest& req) { return receive(req); },
        [](api::HttpRequest&) { return api::Admission{}; });
    ASSERT_TRUE(server_->start().ok());
  }
  void TearDown() override {
    if (dispatcher_) dispatcher_->stop();
    server_->stop();
    store_.reset();
    db_.reset();
    fs::remove_all(dir_);
  }

  api::HttpResponse receive(api::HttpRequest& req) {
    {
      std::lock_guard lock(mu_);
      const int now = ++in_flight_[req.path];
      max_in_flight_[req.path] = std::max(max_in_flight_[req.path], now);
      received_.push_back({req.header("webhook-id"), req.header("webhook-timestamp"), req.header("webhook-signature"),
                           req.body, req.path});
      attempts_[req.header("webhook-id")]++;
    }
    int status = 204;
    if (req.path == "/slow") std::this_thread::sleep_for(300ms);
    if (req.path == "/flaky") {
      std::lock_guard lock(mu_);
      if (attempts_[req.header("webhook-id")] == 1) status = 500;
    }
    {
      std::lock_guard lock(mu_);
      --in_flight_[req.path];
    }
    api::HttpResponse res;
    res.status = status;
    res.content_type.clear();
    return res;
  }

  std::string endpoint(const std::string& id, const std::string& path, const std::string& secret) {
    WebhookEndpoint e;
    e.id = id;
    e.tenant_id = "acme";
    e.url = "http://127.0.0.1:" + std::to_string(server_->port()) + path;
    e.events = {"processing.completed"};
    e.secret = box_->seal(secret, random_).value();
    e.created_at = e.updated_at = clock_.now();
    EXPECT_TRUE(store_->create_webhook(e, 0).ok());
    return id;
  }

  void queue(int n) {
    for (int i = 0; i < n; ++i) {
      const std::string event = "evt_" + std::to_string(next_event_++);
      ASSERT_TRUE(store_->transact([&](MetadataTx& tx) {
        return tx.queue_webhook({"acme", "processing.completed", event, R"({"eventId":")" + event + R"("})"});
      }).ok());
    }
  }

  void start(DispatcherOptions o) {
    o.allow_private_networks = true;
    o.schedule = {50ms, 50ms, 50ms};
    o.jitter = 0;
    dispatcher_ = std::make_unique<WebhookDispatcher>(*store_, *box_, clock_, random_, metrics_, o);
    ASSERT_TRUE(dispatcher_->start().ok());
  }

  size_t received_count() {
    std::lock_guard lock(mu_);
    return received_.size();
  }
  void wait_for(size_t n, std::chrono::milliseconds timeout = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (received_count() < n && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  }
  int64_t pending() {
    int64_t total = 0;
    const auto by_endpoint = store_->pending_deliveries().value();
    for (const auto& [id, n] : by_endpoint) total += n;
    return total;
  }

  fs::path dir_;
  SystemClock clock_;
  SystemRandom random_;
  Metrics metrics_;
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteMetadataStore> store_;
  std::optional<SecretBox> box_;
  std::unique_ptr<api::HttpServer> server_;
  std::unique_ptr<WebhookDispatcher> dispatcher_;
  std::mutex mu_;
  std::vector<Received> received_;
  std::map<std::string, int> attempts_;
  std::map<std::string, int> in_flight_;  // guarded by mu_
  std::map<std::string, int> max_in_flight_;
  int next_event_ = 0;
};

TEST_F(DispatcherTest, EveryQueuedDeliveryArrivesSignedAndAFailedFirstAttemptComesAgainWithTheSameId) {
  const std::string secret_ok = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const std::string secret_flaky = generate_secret(random_);
  endpoint("wh_ok", "/ok", secret_ok);
  endpoint("wh_flaky", "/flaky", secret_flaky);
  start({});
  queue(30);  // while the dispatcher runs: woken by the commits
  wait_for(90);  // 30 to /ok, 30 failed + 30 retried to /flaky
  std::lock_guard lock(mu_);
  ASSERT_EQ(received_.size(), 90u);
  std::map<std::string, std::set<std::string>> bodies_by_id;
  for (const auto& r : received_) {
    const std::string& secret = r.path == "/ok" ? secret_ok : secret_flaky;
    EXPECT_EQ(r.signature, sign(secret, r.id, std::stoll(r.timestamp), r.body).value()) << r.id;
    bodies_by_id[r.id].insert(r.body);
  }
  EXPECT_EQ(bodies_by_id.size(), 60u);  // one id per (endpoint, event)
  for (const auto& [id, bodies] : bodies_by_id) EXPECT_EQ(bodies.size(), 1u) << id;
  for (const auto& [id, n] : attempts_) EXPECT_LE(n, 2) << id;
}

TEST_F(DispatcherTest, ASlowEndpointNeverHasMoreThanItsShareInFlightAndDoesNotHoldBackAnother) {
  endpoint("wh_slow", "/slow", generate_secret(random_));
  endpoint("wh_ok", "/ok", generate_secret(random_));
  queue(40);
  DispatcherOptions o;
  o.per_endpoint = 3;
  o.concurrency = 8;
  start(o);
  // /ok's 40 arrive while /slow (300 ms each, 3 at a time: 4 s in all) is still far from done.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard lock(mu_);
      int ok = 0;
      for (const auto& r : received_) ok += r.path == "/ok";
      if (ok == 40) break;
    }
    std::this_thread::sleep_for(2ms);
  }
  {
    std::lock_guard lock(mu_);
    int ok = 0, slow = 0;
    for (const auto& r : received_) (r.path == "/ok" ? ok : slow)++;
    EXPECT_EQ(ok, 40);
    EXPECT_LT(slow, 40);
  }
  wait_for(80, 30s);
  std::lock_guard lock(mu_);
  EXPECT_EQ(received_.size(), 80u);
  EXPECT_LE(max_in_flight_["/slow"], 3);
  EXPECT_GE(max_in_flight_["/slow"], 2);  // it did use its share
}

TEST_F(DispatcherTest, AttemptsAreRecordedAndAnUnreachableEndpointIsRetriedUntilTheScheduleEnds) {
  endpoint("wh_ok", "/ok", generate_secret(random_));
  WebhookEndpoint dead;
  dead.id = "wh_dead";
  dead.tenant_id = "acme";
  dead.url = "http://127.0.0.1:1/nothing-listens";
  dead.events = {"processing.completed"};
  dead.secret = box_->seal(generate_secret(random_), random_).value();
  dead.created_at = dead.updated_at = clock_.now();
  ASSERT_TRUE(store_->create_webhook(dead, 0).ok());
  queue(3);
  start({});
  wait_for(3);
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (pending() > 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(pending(), 0);
  auto failed = store_->list_deliveries("acme", "wh_dead", DeliveryStatus::kFailed, 10, "").value();
  ASSERT_EQ(failed.deliveries.size(), 3u);
  for (const auto& d : failed.deliveries) {
    EXPECT_EQ(d.attempt_count, 4);  // the first attempt and three retries
    ASSERT_EQ(d.attempts.size(), 4u);
    EXPECT_EQ(d.attempts[0].http_status, 0);
    EXPECT_FALSE(d.attempts[0].error.empty());
  }
  EXPECT_TRUE(store_->get_webhook("acme", "wh_dead")->failing_since.has_value());
  auto ok = store_->list_deliveries("acme", "wh_ok", DeliveryStatus::kSucceeded, 10, "").value();
  ASSERT_EQ(ok.deliveries.size(), 3u);
  EXPECT_EQ(ok.deliveries[0].attempts[0].http_status, 204);
  EXPECT_FALSE(store_->get_webhook("acme", "wh_ok")->failing_since.has_value());
}

}  // namespace
}  // namespace deeplens::webhooks
