// Orphans (issue #13, bug 4): what a crash or a race leaves behind is found and removed, and
// nothing younger than the grace period — an upload in flight — is touched. A delete that races
// the index stage leaves no vector.
#include <gtest/gtest.h>

#include <fstream>

#include "blob/blob_store.h"
#include "pipeline/delete.h"
#include "pipeline/pipeline.h"
#include "pipeline/sweeper.h"
#include "support/pipeline_harness.h"
#include "support/test_extractor.h"

namespace deeplens {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

class Orphans : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::make_temp_dir("deeplens-orphans");
    app::NodeOptions o;
    o.data_dir = dir_;
    o.run.poll_timeout = 200ms;
    auto node = app::Node::open(o, [this](const std::string& name) -> Extractor* {
      return name == "test" ? &extractor_ : nullptr;
    }, clock_, random_);
    ASSERT_TRUE(node.ok()) << node.error().to_string();
    node_ = std::move(node).value();
  }
  void TearDown() override {
    node_.reset();
    fs::remove_all(dir_);
  }
  PipelineContext& ctx() { return node_->context(); }
  // A blob written now, then aged: its modification time moved back by `age`.
  std::string blob(const std::string& kind, const std::string& id, std::chrono::seconds age) {
    const std::string key = blob_key(kind, "acme-corp", id, "jpg", clock_.now());
    const std::string bytes = "bytes of " + id;
    EXPECT_TRUE(ctx().blobs.put(key, std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())).ok());
    const fs::path path = dir_ / "blobs" / key;
    fs::last_write_time(path, fs::last_write_time(path) - age);
    return key;
  }
  fs::path spool_file(const std::string& name, std::chrono::seconds age) {
    fs::create_directories(dir_ / "spool");
    const fs::path path = dir_ / "spool" / name;
    std::ofstream(path) << "part of a body";
    fs::last_write_time(path, fs::last_write_time(path) - age);
    return path;
  }

  fs::path dir_;
  SystemClock clock_;
  SystemRandom random_;
  IdGenerator ids_{random_};
  testing::TestExtractor extractor_{"test", 16};
  std::unique_ptr<app::Node> node_;
};

TEST_F(Orphans, TheSweeperRemovesOrphansPastTheGraceAndNothingElse) {
  auto kept = testing::upload_bytes(ctx(), "acme-corp", "a real image", {"test"});
  ASSERT_TRUE(kept.ok()) << kept.error().to_string();
  const std::string image_id = kept->image.image_id;
  ASSERT_TRUE(node_->start_pipeline().ok());
  ASSERT_TRUE(testing::wait_until([&] { return testing::count_status(node_->store(), "completed") == 1; }, 30s));
  const std::string own_blob = kept->image.storage_path;
  fs::last_write_time(dir_ / "blobs" / own_blob, fs::last_write_time(dir_ / "blobs" / own_blob) - 2h);

  // A crash between a blob's commit and its row's insert, two hours ago, for an image and a
  // thumbnail; and the same a moment ago (an upload in flight).
  const std::string orphan_image = blob("images", ids_.image_id(), 2h);
  const std::string orphan_thumbnail = blob("thumbnails", ids_.image_id(), 2h);
  const std::string in_flight = blob("images", ids_.image_id(), 5s);
  // A crash between a delete's row and its vectors.
  VectorIndex* index = node_->vectors().find_collection(collection_name("acme-corp", "test"));
  ASSERT_NE(index, nullptr);
  const std::vector<float> v(16, 0.25f);
  const std::string orphan_vector = ids_.image_id();
  ASSERT_TRUE(index->upsert(orphan_vector, v).ok());
  // Request bodies: one left by a crash, one being received.
  const fs::path old_spool = spool_file("body-1-1.part", 2h);
  const fs::path new_spool = spool_file("body-1-2.part", 5s);

  SweeperOptions so;
  so.grace = 1h;
  so.spool_dir = dir_ / "spool";
  Sweeper sweeper(ctx(), so);
  auto report = sweeper.sweep();
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_EQ(report->blobs_removed, 2);
  EXPECT_EQ(report->vectors_removed, 1);
  EXPECT_EQ(report->spool_files_removed, 1);
  EXPECT_FALSE(ctx().blobs.exists(orphan_image));
  EXPECT_FALSE(ctx().blobs.exists(orphan_thumbnail));
  EXPECT_TRUE(ctx().blobs.exists(in_flight)) << "an upload in flight was swept";
  EXPECT_TRUE(ctx().blobs.exists(own_blob)) << "a blob with a row was swept";
  EXPECT_FALSE(index->get(orphan_vector).ok());
  EXPECT_TRUE(index->get(image_id).ok());
  EXPECT_FALSE(fs::exists(old_spool));
  EXPECT_TRUE(fs::exists(new_spool));
  // A second pass finds nothing more.
  auto again = sweeper.sweep();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->blobs_removed + again->vectors_removed + again->spool_files_removed, 0);
}

// Forwards to a real collection; just before an upsert it deletes that image: the race where the
// index stage saw the image's row, a delete then removed the row and the (not yet written) vectors,
// and the stage's vector write and transaction come after.
class DeletingIndex final : public VectorIndex {
 public:
  DeletingIndex(VectorIndex& real, std::function<void(std::string_view)> before_upsert)
      : real_(real), before_upsert_(std::move(before_upsert)) {}
  const std::string& name() const override { return real_.name(); }
  size_t dimension() const override { return real_.dimension(); }
  size_t count() const override { return real_.count(); }
  Status upsert(std::string_view id, std::span<const float> v) override {
    before_upsert_(id);
    return real_.upsert(id, v);
  }
  Status remove(std::string_view id) override { return real_.remove(id); }
  std::vector<std::string> ids() const override { return real_.ids(); }
  Result<std::vector<float>> get(std::string_view id) const override { return real_.get(id); }
  using VectorIndex::search;
  Result<std::vector<SearchHit>> search(std::span<const float> q, size_t k, float min_score,
                                        const SearchOptions&) const override {
    return real_.search(q, k, min_score);
  }

 private:
  VectorIndex& real_;
  std::function<void(std::string_view)> before_upsert_;
};

class DeletingStore final : public VectorStore {
 public:
  DeletingStore(VectorStore& real, std::function<void(std::string_view)> before_upsert)
      : real_(real), before_upsert_(std::move(before_upsert)) {}
  Result<VectorIndex*> open_collection(const std::string& name, size_t dimension) override {
    auto real = real_.open_collection(name, dimension);
    if (!real) return real;
    auto& wrapped = wrappers_[name];
    if (!wrapped) wrapped = std::make_unique<DeletingIndex>(**real, before_upsert_);
    return static_cast<VectorIndex*>(wrapped.get());
  }
  Result<VectorIndex*> lookup_collection(const std::string& name) override {
    auto it = wrappers_.find(name);
    if (it == wrappers_.end()) return real_.lookup_collection(name);
    return static_cast<VectorIndex*>(it->second.get());
  }
  std::vector<CollectionStats> stats() const override { return real_.stats(); }
  Status checkpoint() override { return real_.checkpoint(); }

 private:
  VectorStore& real_;
  std::function<void(std::string_view)> before_upsert_;
  std::map<std::string, std::unique_ptr<DeletingIndex>> wrappers_;  // one indexing thread
};

TEST_F(Orphans, ADeleteBetweenTheVectorWriteAndTheIndexTransactionLeavesNoVector) {
  std::unique_ptr<PipelineContext> racing;
  DeletingStore vectors(node_->vectors(), [&](std::string_view id) {
    ASSERT_TRUE(delete_image(*racing, "acme-corp", std::string(id)).ok());
  });
  racing.reset(new PipelineContext{ctx().store, ctx().blobs, vectors, ctx().models, clock_, node_->ids(),
                                   node_->metrics(), ctx().options});
  auto up = testing::upload_bytes(*racing, "acme-corp", "deleted while indexed", {"test"});
  ASSERT_TRUE(up.ok()) << up.error().to_string();
  const std::string id = up->image.image_id;
  PipelineRunOptions ro;
  ro.poll_timeout = 100ms;
  Pipeline pipeline(node_->bus(), *racing, ro);
  ASSERT_TRUE(pipeline.start().ok());
  // The index stage consumed the event (its group's lag is 0) once the vector write happened.
  ASSERT_TRUE(testing::wait_until([&] {
    auto lag = node_->bus().lag(groups::kIndexer, {std::string(topics::kVectorsIndexing)});
    auto gone = node_->store().get_image("acme-corp", id);
    return lag.ok() && *lag == 0 && !gone.ok() && node_->vectors().find_collection(collection_name("acme-corp", "test"));
  }, 30s));
  pipeline.stop();
  VectorIndex* index = node_->vectors().find_collection(collection_name("acme-corp", "test"));
  ASSERT_NE(index, nullptr);
  EXPECT_FALSE(index->get(id).ok()) << "the deleted image's vector survived";
  EXPECT_EQ(index->count(), 0u);
  EXPECT_FALSE(ctx().blobs.exists(up->image.storage_path));
}

}  // namespace
}  // namespace deeplens
