// The embedded pipeline end to end on a real SQLite file, local blobs and the HNSW store, with a
// deterministic test extractor (issue #3 acceptance).
#include <gtest/gtest.h>

#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/sha256.h"
#include "imaging/image.h"
#include "pipeline/event_factory.h"
#include "pipeline/stages.h"
#include "support/pipeline_harness.h"
#include "support/test_extractor.h"

namespace deeplens {
namespace {

using namespace std::chrono_literals;
using testing::TestExtractor;

class EmbeddedPipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::make_temp_dir("deeplens-pipeline");
    open_node();
  }
  void TearDown() override {
    node_.reset();
    std::filesystem::remove_all(dir_);
  }

  void open_node() {
    app::NodeOptions o;
    o.data_dir = dir_;
    o.pipeline.retry = RetryPolicy{3, 20, 1};  // fast backoff for tests: 20, 40 ms
    o.run.poll_timeout = 200ms;
    o.bus.retention = 0ms;  // trimmed once consumed (the retention window has its own test)
    o.pipeline.duplicate_thresholds = {{"test", 0.98}};  // "second" has no near-duplicate check
    auto node = app::Node::open(o, [this](const std::string& name) -> Extractor* {
      if (name == "test") return &extractor_;
      if (name == "second") return &second_;
      return nullptr;
    }, clock_, random_);
    ASSERT_TRUE(node.ok()) << node.error().to_string();
    node_ = std::move(node).value();
  }

  std::string upload(const std::string& bytes, std::vector<std::string> models = {"test"}) {
    auto r = testing::upload_bytes(node_->context(), "acme-corp", bytes, std::move(models));
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    return r ? r->image.image_id : "";
  }

  int64_t completed() { return testing::count_status(node_->store(), "completed"); }
  int64_t failed() { return testing::count_status(node_->store(), "failed"); }

  std::filesystem::path dir_;
  SystemClock clock_;
  SystemRandom random_;
  TestExtractor extractor_{"test", 16};
  TestExtractor second_{"second", 8};
  std::unique_ptr<app::Node> node_;
};

TEST_F(EmbeddedPipeline, TwoHundredImagesCompleteWithOneVectorAndOneCompletionEach) {
  testing::CompletionAudit audit(node_->bus());
  std::vector<std::string> ids;
  for (int i = 0; i < 200; ++i) ids.push_back(upload("image-bytes-" + std::to_string(i)));
  ASSERT_TRUE(node_->start_pipeline().ok());
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 200; }, 60s)) << "completed: " << completed();

  VectorIndex* index = node_->vectors().find_collection(collection_name("acme-corp", "test"));
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->count(), 200u);
  for (const auto& id : ids) {
    auto v = index->get(id);
    ASSERT_TRUE(v.ok()) << id;
    auto hits = index->search(*v, 1, 0);
    ASSERT_TRUE(hits.ok());
    ASSERT_EQ(hits->size(), 1u);
    EXPECT_EQ((*hits)[0].id, id);
  }
  ASSERT_TRUE(testing::wait_until([&] { return audit.drain().size() == 200; }, 10s));
  for (const auto& [image, n] : audit.drain()) EXPECT_EQ(n, 1) << image;

  auto view = load_status(node_->store(), "acme-corp", ids[0]);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->image.status, ImageStatus::kCompleted);
  EXPECT_TRUE(view->image.searchable_after.has_value());
  ASSERT_EQ(view->steps.size(), 2u);
  for (const auto& s : view->steps) {
    EXPECT_EQ(s.status, StepStatus::kCompleted) << s.step;
    EXPECT_EQ(s.attempts, 1) << s.step;
    EXPECT_TRUE(s.duration_ms.has_value()) << s.step;
  }
}

// Collects the completion events the notifier hands out.
class CompletedEvents final : public ImageEventListener {
 public:
  void on_completed(const ProcessingCompletedEvent& e) override {
    std::lock_guard lock(mu_);
    events_[e.data.image_id] = e;
  }
  void on_failed(const ProcessingFailedEvent&, bool) override {}
  std::optional<ProcessingCompletedEvent> get(const std::string& id) {
    std::lock_guard lock(mu_);
    auto it = events_.find(id);
    if (it == events_.end()) return std::nullopt;
    return it->second;
  }

 private:
  std::mutex mu_;
  std::map<std::string, ProcessingCompletedEvent> events_;
};

TEST_F(EmbeddedPipeline, ANearDuplicateNamesTheEarlierImageInItsStatusAndCompletionEvent) {
  auto up = [&](const std::string& bytes, bool skip_check, std::vector<std::string> models = {"test"}) {
    auto r = testing::upload_bytes(node_->context(), "acme-corp", bytes, std::move(models), skip_check);
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    return r ? r->image.image_id : "";
  };
  // Indexed in one batch: the later upload is the copy, never the other way round.
  const std::string original = up("holiday-photo", false);
  const std::string copy = up("near-copy-of:holiday-photo", false);
  const std::string other = up("another-photo", false);
  const std::string skipped = up("near-copy-of:holiday-photo", true);  // the same file again, allowed
  // Only models with a threshold check: "second" has none.
  up("second-photo", false, {"second"});
  const std::string unchecked = up("near-copy-of:second-photo", false, {"second"});
  // Another tenant's copy is not a duplicate of this tenant's image.
  auto foreign = testing::upload_bytes(node_->context(), "other-tenant", "near-copy-of:holiday-photo", {"test"}, false);
  ASSERT_TRUE(foreign.ok()) << foreign.error().to_string();
  CompletedEvents events;
  ASSERT_TRUE(node_->start_pipeline().ok());
  node_->pipeline()->notifier().add_listener(&events);
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 7; }, 30s)) << "completed: " << completed();
  // Later uploads, checked against what is indexed.
  const std::string later = up("holiday-photo-2", false);
  const std::string later_copy = up("near-copy-of:another-photo", false);
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 9; }, 30s)) << "completed: " << completed();

  auto duplicate_of = [&](const std::string& tenant, const std::string& id) {
    auto view = load_status(node_->store(), tenant, id);
    EXPECT_TRUE(view.ok()) << view.error().to_string();
    return view.ok() ? view->image.duplicate_of : std::nullopt;
  };
  auto dup = duplicate_of("acme-corp", copy);
  ASSERT_TRUE(dup.has_value());
  EXPECT_EQ(dup->image_id, original);
  EXPECT_EQ(dup->model, "test");
  EXPECT_GT(dup->score, 0.98);
  EXPECT_LE(dup->score, 1.0 + 1e-6);
  EXPECT_FALSE(duplicate_of("acme-corp", original).has_value()) << "the original is not a copy of its later copy";
  EXPECT_FALSE(duplicate_of("acme-corp", other).has_value());
  EXPECT_FALSE(duplicate_of("acme-corp", skipped).has_value()) << "skipDuplicateCheck skips the check";
  EXPECT_FALSE(duplicate_of("acme-corp", unchecked).has_value());
  EXPECT_FALSE(duplicate_of("other-tenant", foreign->image.image_id).has_value());
  EXPECT_FALSE(duplicate_of("acme-corp", later).has_value());
  auto later_dup = duplicate_of("acme-corp", later_copy);
  ASSERT_TRUE(later_dup.has_value());
  EXPECT_EQ(later_dup->image_id, other);

  // The completion event carries it, and the status JSON shows it.
  auto event = events.get(later_copy);
  ASSERT_TRUE(event.has_value());
  ASSERT_TRUE(event->data.duplicate_of.has_value());
  EXPECT_EQ(event->data.duplicate_of->image_id, other);
  EXPECT_EQ(event->data.duplicate_of->model_name, "test");
  EXPECT_NEAR(event->data.duplicate_of->score, later_dup->score, 1e-6);
  auto plain = events.get(later);
  ASSERT_TRUE(plain.has_value());
  EXPECT_FALSE(plain->data.duplicate_of.has_value());
  auto view = load_status(node_->store(), "acme-corp", later_copy);
  ASSERT_TRUE(view.ok());
  const auto status = nlohmann::json::parse(status_json(*view));
  EXPECT_EQ(status["duplicateOf"]["imageId"], other);
  EXPECT_TRUE(nlohmann::json::parse(status_json(*load_status(node_->store(), "acme-corp", later)))["duplicateOf"].is_null());

  // Listing the tenant's near-duplicates: exactly the two copies, newest first.
  auto page = node_->store().list_images("acme-corp", std::nullopt, 50, "", true);
  ASSERT_TRUE(page.ok());
  std::vector<std::string> listed;
  for (const auto& img : page->images) listed.push_back(img.image_id);
  EXPECT_EQ(listed, (std::vector<std::string>{later_copy, copy}));
}

TEST_F(EmbeddedPipeline, AnImageIsCompletedOnlyWhenEveryRequestedModelIsIndexed) {
  testing::CompletionAudit audit(node_->bus());
  second_.fail_when("multi", 1);  // the second model needs a retry: completion must wait for it
  const std::string id = upload("multi-model-image", {"test", "second"});
  ASSERT_TRUE(node_->start_pipeline().ok());
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 1; }, 20s));
  EXPECT_NE(node_->vectors().find_collection(collection_name("acme-corp", "test")), nullptr);
  auto* second = node_->vectors().find_collection(collection_name("acme-corp", "second"));
  ASSERT_NE(second, nullptr);
  EXPECT_TRUE(second->get(id).ok());
  ASSERT_TRUE(testing::wait_until([&] { return audit.drain().count(id) == 1; }, 10s));
  EXPECT_EQ(audit.drain().at(id), 1);
  auto steps = node_->store().get_steps(id);
  ASSERT_TRUE(steps.ok());
  EXPECT_EQ(steps->size(), 4u);
}

TEST_F(EmbeddedPipeline, AnExtractorThatFailsTwiceCompletesOnTheThirdAttempt) {
  extractor_.fail_when("flaky", 2);
  const std::string flaky = upload("flaky-image");
  // Alone, so each attempt is one extraction call (a failed batch is retried image by image).
  ASSERT_TRUE(node_->start_pipeline().ok());
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 1; }, 20s)) << "completed " << completed();
  auto steps = node_->store().get_steps(flaky);
  ASSERT_TRUE(steps.ok());
  for (const auto& s : *steps) {
    if (s.step != "feature_extraction") continue;
    EXPECT_EQ(s.attempts, 3);
    EXPECT_EQ(s.status, StepStatus::kCompleted);
  }
  auto letters = node_->store().list_dead_letters(true, 10);
  ASSERT_TRUE(letters.ok());
  EXPECT_TRUE(letters->empty());
}

TEST_F(EmbeddedPipeline, AnAlwaysFailingImageIsDeadLetteredAndCanBeReplayedAfterTheFix) {
  extractor_.fail_when("broken", -1);
  const std::string broken = upload("broken-image");
  std::vector<std::string> others;
  for (int i = 0; i < 5; ++i) others.push_back(upload("other-" + std::to_string(i)));
  ASSERT_TRUE(node_->start_pipeline().ok());
  ASSERT_TRUE(testing::wait_until([&] { return failed() == 1 && completed() == 5; }, 20s))
      << "failed " << failed() << " completed " << completed();

  auto letters = node_->store().list_dead_letters(false, 10);
  ASSERT_TRUE(letters.ok());
  ASSERT_EQ(letters->size(), 1u);
  const auto& letter = (*letters)[0];
  EXPECT_EQ(letter.image_id, broken);
  EXPECT_EQ(letter.attempts, 3);
  EXPECT_EQ(letter.topic, topics::kFeaturesExtraction);
  EXPECT_TRUE(decode_feature_extraction_requested(letter.payload).ok()) << "the full original event";
  auto view = load_status(node_->store(), "acme-corp", broken);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->image.status, ImageStatus::kFailed);
  bool step_failed = false;
  for (const auto& s : view->steps)
    if (s.step == "feature_extraction") {
      step_failed = s.status == StepStatus::kFailed && s.attempts == 3 && !s.last_error.empty();
    }
  EXPECT_TRUE(step_failed);

  extractor_.clear_faults();
  ASSERT_TRUE(replay_dead_letter(node_->context(), letter.id).ok());
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 6; }, 20s));
  EXPECT_EQ(failed(), 0);
  auto after = node_->store().list_dead_letters(false, 10);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->empty());
  EXPECT_FALSE(replay_dead_letter(node_->context(), letter.id).ok()) << "a letter is replayed once";
}

TEST_F(EmbeddedPipeline, AMalformedMessageIsDeadLetteredAndThePipelineKeepsGoing) {
  ASSERT_TRUE(node_->start_pipeline().ok());
  ASSERT_TRUE(node_->bus().publish({std::string(topics::kFeaturesExtraction), "img_x", "{not json", {}}).ok());
  ASSERT_TRUE(node_->bus().publish({std::string(topics::kImagesUploaded), "img_y", R"({"eventType":"image.uploaded"})", {}}).ok());
  upload("after-the-poison");
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 1; }, 20s));
  std::vector<DeadLetter> letters;
  ASSERT_TRUE(testing::wait_until([&] {
    auto l = node_->store().list_dead_letters(false, 10);
    letters = l ? *l : std::vector<DeadLetter>{};
    return letters.size() == 2;
  }, 10s));
  for (const auto& l : letters) EXPECT_EQ(l.error_code, "UNDECODABLE");
}

// The index stage writes a batch's vectors with one upsert_batch; a vector the index rejects fails
// only its own image, and every other image of the batch completes.
TEST_F(EmbeddedPipeline, TheIndexStageWritesABatchTogetherAndABadVectorFailsOnlyItsImage) {
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(upload("batched-" + std::to_string(i)));
  std::vector<BusMessage> batch;
  for (int i = 0; i < 4; ++i) {
    VectorIndexingRequestedEvent e;
    e.envelope = {node_->context().ids.event_id(), clock_.now(), "acme-corp", node_->context().ids.event_id()};
    e.data.image_id = ids[i];
    e.data.model_name = "test";
    e.data.feature_vector.assign(16, i == 2 ? 0.0f : 1.0f + static_cast<float>(i));  // #2: zero length
    e.data.vector_metadata.model_version = "t1";
    const OutboxMessage m = to_outbox(e);
    BusMessage msg;
    msg.topic = m.topic;
    msg.key = m.key;
    msg.payload = m.payload;
    msg.offset = i;
    batch.push_back(std::move(msg));
  }
  batch.push_back(batch[0]);  // a redelivery inside the same batch changes nothing
  IndexStage stage(node_->context());
  EXPECT_EQ(stage.handle(batch), batch.size());
  VectorIndex* index = node_->vectors().find_collection(collection_name("acme-corp", "test"));
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->count(), 3u);
  for (int i = 0; i < 4; ++i) {
    auto image = node_->store().get_image("acme-corp", ids[i]);
    ASSERT_TRUE(image.ok());
    auto steps = node_->store().get_steps(ids[i]);
    ASSERT_TRUE(steps.ok());
    const StepRecord* step = nullptr;
    for (const auto& s : *steps)
      if (s.step == "vector_indexing") step = &s;
    ASSERT_NE(step, nullptr) << i;
    if (i == 2) {
      EXPECT_EQ(step->status, StepStatus::kFailed);
      EXPECT_NE(step->last_error.find("INVALID_VECTOR"), std::string::npos) << step->last_error;
      EXPECT_FALSE(index->get(ids[i]).ok());
    } else {
      EXPECT_EQ(step->status, StepStatus::kCompleted) << i << ": " << step->last_error;
      EXPECT_EQ(image->status, ImageStatus::kCompleted) << i;
      EXPECT_TRUE(index->get(ids[i]).ok()) << i;
    }
  }
}

TEST_F(EmbeddedPipeline, RedeliveredEventsChangeNothing) {
  testing::CompletionAudit audit(node_->bus());
  const std::string id = upload("once");
  ASSERT_TRUE(node_->start_pipeline().ok());
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 1; }, 20s));
  node_->stop();
  // Rewind every stage's group to the beginning of the log, as if no commit had ever happened.
  {
    auto db = SqliteDatabase::open(dir_ / "deeplens.db");
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->write([](SqliteConnection& c) {
                  return c.exec("UPDATE bus_offsets SET next_offset = 0 WHERE consumer_group LIKE 'deeplens.%'");
                }).ok());
  }
  ASSERT_TRUE(node_->start_pipeline().ok());
  ASSERT_TRUE(testing::wait_until([&] {
    auto lag = node_->bus().lag("deeplens.notifier", {std::string(topics::kProcessingCompleted)});
    return lag && *lag == 0 && extractor_.calls() >= 1;
  }, 10s));
  // Every stage has consumed everything redelivered (a second completion would be in the log by
  // then, appended in the index stage's transaction) and so has the audit: then count.
  ASSERT_TRUE(testing::wait_until([&] {
    audit.drain();
    const std::pair<std::string_view, std::string_view> groups[] = {
        {"deeplens.orchestrator", topics::kImagesUploaded}, {"deeplens.extractor", topics::kFeaturesExtraction},
        {"deeplens.indexer", topics::kVectorsIndexing}, {"test.audit", topics::kProcessingCompleted}};
    for (const auto& [group, topic] : groups) {
      auto lag = node_->bus().lag(std::string(group), {std::string(topic)});
      if (!lag || *lag != 0) return false;
    }
    return true;
  }, 10s));
  EXPECT_EQ(audit.drain().at(id), 1);
  EXPECT_EQ(node_->vectors().find_collection(collection_name("acme-corp", "test"))->count(), 1u);
  auto steps = node_->store().get_steps(id);
  ASSERT_TRUE(steps.ok());
  EXPECT_EQ(steps->size(), 2u);
}

TEST_F(EmbeddedPipeline, RetentionTrimsFullyConsumedEvents) {
  for (int i = 0; i < 20; ++i) upload("retained-" + std::to_string(i));
  ASSERT_TRUE(node_->start_pipeline().ok());
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 20; }, 20s));
  ASSERT_TRUE(testing::wait_until([&] {
    auto lag = node_->bus().lag("deeplens.notifier", {std::string(topics::kProcessingCompleted)});
    return lag && *lag == 0;
  }, 10s));
  node_->stop();
  auto before = node_->log_bus()->stored_messages();
  ASSERT_TRUE(before.ok());
  EXPECT_GT(*before, 0);
  auto trimmed = node_->log_bus()->trim();
  ASSERT_TRUE(trimmed.ok());
  auto after = node_->log_bus()->stored_messages();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, 0) << "every topic's events were consumed by every group";
}

// Thumbnails are made by their own stage beside the orchestrator, off the path to searchable.
TEST_F(EmbeddedPipeline, TheThumbnailStageMakesAThumbnailUnlessTheUploadOptsOut) {
  ASSERT_TRUE(init_imaging().ok());
  std::ifstream in("/usr/share/doc/opencv-doc/examples/data/orange.jpg", std::ios::binary);
  ASSERT_TRUE(in) << "opencv-doc is installed by scripts/bootstrap";
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string photo = buf.str();
  auto upload_photo = [&](bool thumbnail) {
    auto& ctx = node_->context();
    auto span = std::span(reinterpret_cast<const uint8_t*>(photo.data()), photo.size());
    auto info = probe_buffer(span, ctx.options.limits);
    EXPECT_TRUE(info.ok());
    auto writer = std::move(ctx.blobs.begin_write()).value();
    EXPECT_TRUE(writer->write(span).ok());
    UploadRequest req;
    req.tenant_id = "acme-corp";
    req.file_name = "orange.jpg";
    req.options.models = {"test"};
    req.options.skip_duplicate_check = true;
    req.options.generate_thumbnail = thumbnail;
    req.sha256 = sha256_hex(photo);
    req.info = *info;
    req.blob = std::move(writer);
    auto r = accept_upload(ctx, std::move(req));
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    return r->image.image_id;
  };
  const std::string with = upload_photo(true);
  const std::string without = upload_photo(false);
  ASSERT_TRUE(node_->start_pipeline().ok());
  auto image = [&](const std::string& id) { return std::move(node_->store().get_image("acme-corp", id)).value(); };
  ASSERT_TRUE(testing::wait_until([&] { return !image(with).thumbnail_path.empty(); }, 20s));
  auto thumb = node_->blobs().read(image(with).thumbnail_path);
  ASSERT_TRUE(thumb.ok());
  EXPECT_EQ(thumb->substr(0, 3), "\xFF\xD8\xFF");
  auto info = probe_buffer(std::span(reinterpret_cast<const uint8_t*>(thumb->data()), thumb->size()), {});
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(std::max(info->width, info->height), PipelineOptions{}.thumbnail_edge);

  // The thumbnailer has read both uploads; the one that opted out has none, and both complete.
  ASSERT_TRUE(testing::wait_until([&] {
    auto lag = node_->bus().lag(groups::kThumbnailer, {std::string(topics::kImagesUploaded)});
    return lag.ok() && *lag == 0;
  }, 20s));
  EXPECT_TRUE(image(without).thumbnail_path.empty());
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 2; }, 20s));
}

}  // namespace
}  // namespace deeplens
