// The real pipeline on Kafka (issue #6): SQLite metadata with a real outbox table (no log
// appender), the OutboxRelay publishing it to a KafkaBus over the in-process dev broker, every
// stage consuming from Kafka, HNSW vectors and the deterministic TestExtractor. Then independent
// clients (kcat, and python3-kafka which shares no code with librdkafka) read the topics.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <thread>

#include "blob/local/local_blob_store.h"
#include "integration/kafka/kafka_test_support.h"
#include "pipeline/outbox_relay.h"
#include "pipeline/pipeline.h"
#include "store/sqlite/sqlite_metadata_store.h"
#include "support/pipeline_harness.h"
#include "support/test_extractor.h"
#include "vectors/hnsw/hnsw_store.h"

namespace deeplens {
namespace {

using namespace std::chrono_literals;
using testing::TestExtractor;

// Runs a shell command and returns its stdout (test-only; the command is built from constants).
std::string run_capture(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

class KafkaPipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::make_temp_dir("deeplens-kafka-pipeline");
    DevKafkaBrokerOptions bo;
    bo.partitions = 4;
    for (auto t : topics::kAll) bo.topics.emplace_back(t);
    auto broker = DevKafkaBroker::start(bo);
    ASSERT_TRUE(broker.ok()) << broker.error().to_string();
    broker_ = std::move(broker).value();

    auto options = testing::dev_bus_options(broker_->bootstrap_servers());
    for (auto t : topics::kAll) options.topics.emplace_back(t);  // all exist: no CreateTopics call
    auto bus = KafkaBus::open(options);
    ASSERT_TRUE(bus.ok()) << bus.error().to_string();
    bus_ = std::move(bus).value();

    auto db = SqliteDatabase::open(dir_ / "deeplens.db");
    ASSERT_TRUE(db.ok()) << db.error().to_string();
    db_ = std::move(db).value();
    auto store = SqliteMetadataStore::open(*db_, clock_);  // no log appender: events go to the outbox
    ASSERT_TRUE(store.ok());
    store_ = std::move(store).value();
    auto blobs = LocalBlobStore::open(dir_ / "blobs", random_);
    ASSERT_TRUE(blobs.ok());
    blobs_ = std::move(blobs).value();
    auto vectors = HnswVectorStore::open((dir_ / "vectors").string());
    ASSERT_TRUE(vectors.ok());
    vectors_ = std::move(vectors).value();
    PipelineOptions po;
    po.retry = RetryPolicy{3, 20, 1};
    context_ = std::make_unique<PipelineContext>(PipelineContext{
        *store_, *blobs_, *vectors_, [this](const std::string& name) -> Extractor* {
          return name == "test" ? &extractor_ : nullptr;
        }, clock_, ids_, metrics_, po});

    relay_ = std::make_unique<OutboxRelay>(*store_, *bus_, metrics_);
    db_->add_commit_listener([raw = relay_.get()] { raw->notify(); });
    ASSERT_TRUE(relay_->start().ok());
    PipelineRunOptions ro;
    ro.poll_timeout = 200ms;
    pipeline_ = std::make_unique<Pipeline>(*bus_, *context_, ro);
  }

  void TearDown() override {
    if (pipeline_) pipeline_->stop();
    pipeline_.reset();
    if (relay_) relay_->stop();
    audit_.reset();
    bus_.reset();
    broker_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string upload(const std::string& bytes) {
    auto r = testing::upload_bytes(*context_, "acme-corp", bytes, {"test"});
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    return r ? r->image.image_id : "";
  }
  int64_t completed() { return testing::count_status(*store_, "completed"); }

  std::filesystem::path dir_;
  SystemClock clock_;
  SystemRandom random_;
  IdGenerator ids_{random_};
  Metrics metrics_;
  TestExtractor extractor_{"test", 16};
  std::unique_ptr<DevKafkaBroker> broker_;
  std::unique_ptr<KafkaBus> bus_;
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteMetadataStore> store_;
  std::unique_ptr<LocalBlobStore> blobs_;
  std::unique_ptr<HnswVectorStore> vectors_;
  std::unique_ptr<PipelineContext> context_;
  std::unique_ptr<OutboxRelay> relay_;
  std::unique_ptr<Pipeline> pipeline_;
  std::unique_ptr<testing::CompletionAudit> audit_;
};

TEST_F(KafkaPipeline, FiftyImagesCompleteOnKafkaWithOneCompletionEachAndKcatSeesKeysAndHeaders) {
  audit_ = std::make_unique<testing::CompletionAudit>(*bus_);
  ASSERT_TRUE(pipeline_->start().ok());
  std::vector<std::string> ids;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 50; ++i) ids.push_back(upload("kafka-image-" + std::to_string(i)));
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 50; }, 90s)) << "completed: " << completed();
  std::cout << "[ measure ] 50 images uploaded -> all completed on Kafka: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count()
            << " ms (includes the stage groups' first join)\n";
  ASSERT_TRUE(testing::wait_until([&] { return audit_->drain().size() == 50; }, 30s));
  for (const auto& [image, n] : audit_->drain()) EXPECT_EQ(n, 1) << image;
  VectorIndex* index = vectors_->find_collection(collection_name("acme-corp", "test"));
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->count(), 50u);
  auto backlog = store_->outbox_backlog();
  ASSERT_TRUE(backlog.ok());
  EXPECT_EQ(*backlog, 0);

  // Upload-to-searchable of single images once the groups are warm (the extractor costs ~0 ms,
  // so this is the pipeline's own overhead: outbox -> relay -> 4 Kafka hops -> SQLite commits).
  std::vector<double> ms;
  for (int i = 0; i < 20; ++i) {
    const auto s = std::chrono::steady_clock::now();
    upload("latency-image-" + std::to_string(i));
    // 1 ms steps (wait_until's 20 ms would swamp the measurement).
    const auto end = s + 20s;
    while (completed() != 51 + i && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(1ms);
    ASSERT_EQ(completed(), 51 + i);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s).count());
  }
  std::sort(ms.begin(), ms.end());
  std::cout << "[ measure ] upload -> completed, one image at a time on Kafka (20 samples): p50 "
            << ms[10] << " ms, max " << ms[19] << " ms\n";

  // An independent client reads the uploaded topic: key = imageId, the four headers present.
  const std::string out = run_capture("kcat -b " + broker_->bootstrap_servers() +
                                      " -C -t deeplens.images.uploaded -e -q -o beginning -f '%k %h\\n' 2>/dev/null");
  std::istringstream lines(out);
  std::string line;
  std::set<std::string> keys;
  int n = 0;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    ++n;
    const std::string key = line.substr(0, line.find(' '));
    keys.insert(key);
    EXPECT_EQ(key.rfind("img_", 0), 0u) << line;
    EXPECT_NE(line.find("eventType=image.uploaded"), std::string::npos) << line;
    EXPECT_NE(line.find("eventVersion=1.0"), std::string::npos) << line;
    EXPECT_NE(line.find("correlationId=evt_"), std::string::npos) << line;
    EXPECT_NE(line.find("tenantId=acme-corp"), std::string::npos) << line;
  }
  EXPECT_EQ(n, 70) << out.substr(0, 500);
  for (const auto& id : ids) EXPECT_TRUE(keys.count(id)) << id;

  // And a second, non-librdkafka client: python3-kafka under Debian's own python3.
  const std::string py = run_capture(
      "/usr/bin/python3 -c \"import sys\n"
      "from kafka import KafkaConsumer\n"
      "c = KafkaConsumer('deeplens.processing.completed', bootstrap_servers=sys.argv[1].split(','),"
      " auto_offset_reset='earliest', consumer_timeout_ms=3000, group_id=None)\n"
      "for m in c: print(m.key.decode(), ','.join(k for k, v in m.headers))\n\" " +
      broker_->bootstrap_servers() + " 2>&1");
  std::istringstream py_lines(py);
  int completions = 0;
  while (std::getline(py_lines, line)) {
    if (line.rfind("img_", 0) != 0) continue;
    ++completions;
    EXPECT_NE(line.find("eventType,eventVersion,correlationId,tenantId"), std::string::npos) << line;
  }
  EXPECT_EQ(completions, 70) << py.substr(0, 500);
}

TEST_F(KafkaPipeline, UploadsAreAcceptedWhileEveryBrokerIsDownAndCompleteAfterwards) {
  ASSERT_TRUE(pipeline_->start().ok());
  upload("warm-up");
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 1; }, 60s));
  for (int id = 1; id <= 3; ++id) ASSERT_TRUE(broker_->set_broker_down(id).ok());
  for (int i = 0; i < 10; ++i) ASSERT_FALSE(upload("during-outage-" + std::to_string(i)).empty());
  ASSERT_TRUE(testing::wait_until([&] { return relay_->backing_off(); }, 30s)) << "the relay noticed the outage";
  for (int id = 1; id <= 3; ++id) ASSERT_TRUE(broker_->set_broker_up(id).ok());
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 11; }, 90s)) << "completed: " << completed();
  // The completion events were written with the status; the relay publishes them right after.
  EXPECT_TRUE(testing::wait_until([&] {
    auto backlog = store_->outbox_backlog();
    return backlog.ok() && *backlog == 0;
  }, 30s)) << "the outbox drains";
}

}  // namespace
}  // namespace deeplens
