// search_images end to end on the embedded Node: real photos (Debian's scikit-image and OpenCV
// samples) are uploaded through accept_upload with their real probe info, indexed by the pipeline
// (built-in descriptor; mobilenet_v2 from ../shared/models in its own test), then searched by the
// bytes of a re-encoded 300 px thumbnail of each photo and by imageId. Prints the scores.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <thread>

#include "app/models.h"
#include "features/builtin/builtin_descriptor.h"
#include "pipeline/search.h"
#include "support/pipeline_harness.h"
#include "support/test_extractor.h"

namespace deeplens {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr const char* kTenant = "acme-corp";
constexpr const char* kOtherTenant = "other-co";
// Same collection slug as kTenant ("acmecorp"): its vectors share acme-corp's collection, so only
// the metadata lookup keeps the two tenants' results apart.
constexpr const char* kSlugTwinTenant = "acmecorp";

struct Photo {
  std::string name;
  std::string bytes;
  std::string id;  // imageId once uploaded
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<Photo> load_photos() {
  const fs::path skimage = "/usr/lib/python3/dist-packages/skimage/data";
  const fs::path opencv = "/usr/share/doc/opencv-doc/examples/data";
  std::vector<fs::path> paths;
  for (const char* n : {"astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                        "hubble_deep_field.jpg", "retina.jpg"})
    paths.push_back(skimage / n);
  for (const char* n : {"baboon.jpg", "fruits.jpg", "butterfly.jpg", "home.jpg", "orange.jpg"})
    paths.push_back(opencv / n);
  std::vector<Photo> out;
  for (const auto& p : paths)
    if (fs::exists(p)) out.push_back(Photo{p.filename().string(), read_file(p), {}});
  return out;
}

std::span<const uint8_t> as_span(const std::string& s) {
  return std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// Like testing::upload_bytes, but with the probe info of the real bytes (format, size, colour
// profile) and the photo's file name, and with a thumbnail, as the upload API would do it.
Result<CreateImageOutcome> upload_photo(PipelineContext& ctx, const std::string& tenant, const std::string& file_name,
                                        const std::string& bytes, std::vector<std::string> models) {
  auto info = probe_buffer(as_span(bytes), ctx.options.limits);
  if (!info) return std::move(info).error();
  auto writer = ctx.blobs.begin_write();
  if (!writer) return std::move(writer).error();
  if (auto st = (*writer)->write(as_span(bytes)); !st) return std::move(st).error();
  UploadRequest req;
  req.tenant_id = tenant;
  req.file_name = sanitize_file_name(file_name);
  req.options.models = std::move(models);
  req.options.generate_thumbnail = true;
  req.options.skip_duplicate_check = true;
  req.sha256 = std::to_string(std::hash<std::string>{}(bytes));
  req.info = std::move(info).value();
  req.blob = std::move(writer).value();
  return accept_upload(ctx, std::move(req));
}

// The query variant of a photo: a 300 px JPEG thumbnail (resized and re-encoded).
std::string query_variant(const std::string& original) {
  auto thumb = make_thumbnail(as_span(original), 300, ThumbnailFormat::kJpeg, ImageLimits{});
  EXPECT_TRUE(thumb.ok()) << thumb.error().to_string();
  return thumb ? std::string(thumb->begin(), thumb->end()) : std::string();
}

std::string context_of(const Error& e, const std::string& key) {
  auto it = e.context.find(key);
  return it == e.context.end() ? "" : it->second;
}

// One Node on a temp directory with its models; uploads photos and runs the pipeline.
class SearchNode {
 public:
  // `lookup` must stay valid for the node's lifetime (the caller owns the models).
  explicit SearchNode(ModelLookup lookup) : dir_(testing::make_temp_dir("deeplens-search")) {
    app::NodeOptions o;
    o.data_dir = dir_;
    o.pipeline.retry = RetryPolicy{3, 20, 1};
    o.run.poll_timeout = 200ms;
    auto node = app::Node::open(o, std::move(lookup), clock_, random_);
    if (!node) throw std::runtime_error(node.error().to_string());
    node_ = std::move(node).value();
  }
  ~SearchNode() {
    node_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  app::Node& node() { return *node_; }
  PipelineContext& ctx() { return node_->context(); }

  std::string upload(const std::string& tenant, const std::string& name, const std::string& bytes,
                     const std::string& model) {
    auto r = upload_photo(ctx(), tenant, name, bytes, {model});
    EXPECT_TRUE(r.ok()) << name << ": " << r.error().to_string();
    if (!r) return "";
    ++uploaded_;
    return r->image.image_id;
  }

  // Starts the pipeline (once) and waits until every upload so far is completed.
  ::testing::AssertionResult run_until_all_completed(std::chrono::milliseconds deadline) {
    if (!started_) {
      if (auto st = node_->start_pipeline(); !st) return ::testing::AssertionFailure() << st.error().to_string();
      started_ = true;
    }
    const bool done = testing::wait_until(
        [&] { return testing::count_status(node_->store(), "completed") == uploaded_; }, deadline);
    if (done) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "completed " << testing::count_status(node_->store(), "completed")
                                         << " of " << uploaded_ << ", failed "
                                         << testing::count_status(node_->store(), "failed");
  }

 private:
  fs::path dir_;
  SystemClock clock_;
  SystemRandom random_;
  std::unique_ptr<app::Node> node_;
  int64_t uploaded_ = 0;
  bool started_ = false;
};

void print_results(const std::string& title, const SearchResponse& r) {
  std::printf("%s  [%s, extraction %lld ms, search %lld ms]\n", title.c_str(), r.collection.c_str(),
              static_cast<long long>(r.extraction_ms), static_cast<long long>(r.search_ms));
  for (size_t i = 0; i < r.results.size(); ++i)
    std::printf("    %2zu. %-22s %.4f\n", i + 1, r.results[i].image.file_name.c_str(), r.results[i].score);
}

// ------------------------------------------------------------------------------------------------
// Built-in descriptor: one corpus shared by the suite (the tests only read it, except
// DeletedImagesAreSkipped, which cleans up after itself).

class BuiltinSearch : public ::testing::Test {
 protected:
  struct Corpus {
    std::unique_ptr<Extractor> builtin = make_builtin_descriptor();
    testing::TestExtractor unused{"unused", 16};  // registered, never requested by an upload
    std::unique_ptr<SearchNode> node;
    std::vector<Photo> photos;
    std::string other_tenant_id;  // kOtherTenant's copy of photos[0]
    std::string slug_twin_id;     // kSlugTwinTenant's copy of photos[1]
  };

  static void SetUpTestSuite() {
    ASSERT_TRUE(init_imaging().ok());
    corpus_ = new Corpus();
    corpus_->node = std::make_unique<SearchNode>([c = corpus_](const std::string& name) -> Extractor* {
      if (name == "builtin") return c->builtin.get();
      if (name == "unused") return &c->unused;
      return nullptr;
    });
    corpus_->photos = load_photos();
    ASSERT_GE(corpus_->photos.size(), 10u) << "needs python3-skimage and opencv-doc sample photos";
    for (auto& p : corpus_->photos) p.id = corpus_->node->upload(kTenant, p.name, p.bytes, "builtin");
    corpus_->other_tenant_id =
        corpus_->node->upload(kOtherTenant, corpus_->photos[0].name, corpus_->photos[0].bytes, "builtin");
    corpus_->slug_twin_id =
        corpus_->node->upload(kSlugTwinTenant, corpus_->photos[1].name, corpus_->photos[1].bytes, "builtin");
    ASSERT_TRUE(corpus_->node->run_until_all_completed(120s));
    ready_ = true;
  }
  static void TearDownTestSuite() {
    delete corpus_;
    corpus_ = nullptr;
    ready_ = false;
  }
  void SetUp() override {
    if (!ready_) GTEST_SKIP() << "the corpus could not be built (see the suite's set-up failure)";
  }

  static PipelineContext& ctx() { return corpus_->node->ctx(); }
  static const std::vector<Photo>& photos() { return corpus_->photos; }

  static SearchQuery by_id(const std::string& id, size_t top_k = 100, float min_score = -1) {
    SearchQuery q;
    q.tenant_id = kTenant;
    q.model = "builtin";
    q.image_id = id;
    q.top_k = top_k;
    q.min_score = min_score;
    return q;
  }
  static SearchQuery by_bytes(std::string bytes, size_t top_k = 10, float min_score = 0) {
    SearchQuery q;
    q.tenant_id = kTenant;
    q.model = "builtin";
    q.image_bytes = std::move(bytes);
    q.top_k = top_k;
    q.min_score = min_score;
    return q;
  }

  static Corpus* corpus_;
  static bool ready_;
};

BuiltinSearch::Corpus* BuiltinSearch::corpus_ = nullptr;
bool BuiltinSearch::ready_ = false;

TEST_F(BuiltinSearch, AResizedReencodedCopyFindsItsOriginalFirst) {
  for (const auto& p : photos()) {
    auto r = search_images(ctx(), by_bytes(query_variant(p.bytes), 5, -1));
    ASSERT_TRUE(r.ok()) << p.name << ": " << r.error().to_string();
    print_results("query: 300px JPEG of " + p.name, *r);
    ASSERT_FALSE(r->results.empty()) << p.name;
    EXPECT_EQ(r->results[0].image_id, p.id) << p.name << " ranked first: " << r->results[0].image.file_name;
    EXPECT_EQ(r->model, "builtin");
    EXPECT_EQ(r->collection, "tenant_acme-corp_builtin_vectors");
    // Enriched from the tenant's metadata.
    const ImageRecord& top = r->results[0].image;
    EXPECT_EQ(top.image_id, p.id);
    EXPECT_EQ(top.tenant_id, kTenant);
    EXPECT_EQ(top.file_name, p.name);
    EXPECT_FALSE(top.thumbnail_path.empty()) << p.name;
    EXPECT_EQ(top.status, ImageStatus::kCompleted);
    EXPECT_GT(top.width, 1);
    for (const auto& item : r->results) {
      EXPECT_EQ(item.image.tenant_id, kTenant) << "the slug twin's image must not leak in";
      EXPECT_NE(item.image_id, corpus_->slug_twin_id);
    }
  }
}

TEST_F(BuiltinSearch, ByImageIdExcludesItselfAndRanksTheRest) {
  const Photo& query = photos()[2];
  auto r = search_images(ctx(), by_id(query.id));
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  print_results("query: imageId of " + query.name, *r);
  EXPECT_EQ(r->extraction_ms, 0);
  ASSERT_EQ(r->results.size(), photos().size() - 1) << "every other photo of the tenant, and only those";
  std::set<std::string> expected;
  for (const auto& p : photos())
    if (p.id != query.id) expected.insert(p.id);
  std::set<std::string> got;
  for (const auto& item : r->results) got.insert(item.image_id);
  EXPECT_EQ(got, expected);
  for (size_t i = 1; i < r->results.size(); ++i)
    EXPECT_GE(r->results[i - 1].score, r->results[i].score) << "best first";
  for (const auto& item : r->results) {
    EXPECT_GE(item.score, -1.0f);
    EXPECT_LE(item.score, 1.0f);
    EXPECT_LT(item.score, 0.999f) << "no copy of the query itself";
  }
}

TEST_F(BuiltinSearch, TheSlugTwinTenantHasItsOwnCollectionAndSeesOnlyItsOwnImages) {
  SearchQuery q = by_bytes(query_variant(photos()[1].bytes), 10, -1);
  q.tenant_id = kSlugTwinTenant;
  auto r = search_images(ctx(), q);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  print_results(std::string("tenant ") + kSlugTwinTenant + ", query: 300px JPEG of " + photos()[1].name, *r);
  EXPECT_EQ(r->collection, "tenant_acmecorp_builtin_vectors") << "acme-corp has tenant_acme-corp_builtin_vectors";
  ASSERT_EQ(r->results.size(), 1u);
  EXPECT_EQ(r->results[0].image_id, corpus_->slug_twin_id);
  EXPECT_EQ(r->results[0].image.tenant_id, kSlugTwinTenant);

  // Whatever the query, its one image is the only result: the acme-corp vectors ranked above it
  // are skipped and the index is asked again for more until it turns up.
  for (const auto& p : photos()) {
    SearchQuery any = by_bytes(query_variant(p.bytes), 1, -1);
    any.tenant_id = kSlugTwinTenant;
    auto one = search_images(ctx(), any);
    ASSERT_TRUE(one.ok()) << p.name << ": " << one.error().to_string();
    ASSERT_EQ(one->results.size(), 1u) << p.name;
    EXPECT_EQ(one->results[0].image_id, corpus_->slug_twin_id) << p.name;
  }

  // And by its image id: acme-corp's identical photo lies in the same collection but is not shown.
  SearchQuery by = by_id(corpus_->slug_twin_id);
  by.tenant_id = kSlugTwinTenant;
  auto r2 = search_images(ctx(), by);
  ASSERT_TRUE(r2.ok()) << r2.error().to_string();
  EXPECT_TRUE(r2->results.empty());
}

TEST_F(BuiltinSearch, AnotherTenantsImageIdIsNotFound) {
  auto r = search_images(ctx(), by_id(corpus_->other_tenant_id));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(r.error().message, "image not found");
  EXPECT_EQ(context_of(r.error(), "field"), "imageId");

  auto missing = search_images(ctx(), by_id("img_00000000-0000-0000-0000-000000000000"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(missing.error().message, r.error().message) << "absent and foreign look the same";

  // The owner can search by it.
  SearchQuery own = by_id(corpus_->other_tenant_id);
  own.tenant_id = kOtherTenant;
  auto mine = search_images(ctx(), own);
  ASSERT_TRUE(mine.ok()) << mine.error().to_string();
  EXPECT_TRUE(mine->results.empty()) << "the only image of its tenant, and excluded from its own results";
}

TEST_F(BuiltinSearch, MinScoreFilters) {
  auto all = search_images(ctx(), by_id(photos()[0].id));
  ASSERT_TRUE(all.ok()) << all.error().to_string();
  ASSERT_GE(all->results.size(), 4u);
  // A threshold between the 3rd and 4th best.
  const float threshold = (all->results[2].score + all->results[3].score) / 2;
  auto some = search_images(ctx(), by_id(photos()[0].id, 100, threshold));
  ASSERT_TRUE(some.ok()) << some.error().to_string();
  std::printf("minScore %.4f keeps %zu of %zu\n", threshold, some->results.size(), all->results.size());
  ASSERT_EQ(some->results.size(), 3u);
  for (size_t i = 0; i < some->results.size(); ++i) {
    EXPECT_EQ(some->results[i].image_id, all->results[i].image_id);
    EXPECT_GE(some->results[i].score, threshold);
  }
  auto none = search_images(ctx(), by_id(photos()[0].id, 100, 1.0f));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->results.empty());
}

TEST_F(BuiltinSearch, TopKLimits) {
  auto all = search_images(ctx(), by_id(photos()[3].id));
  ASSERT_TRUE(all.ok()) << all.error().to_string();
  for (size_t k : {1u, 3u, 5u}) {
    auto r = search_images(ctx(), by_id(photos()[3].id, k));
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    ASSERT_EQ(r->results.size(), k);
    for (size_t i = 0; i < k; ++i) EXPECT_EQ(r->results[i].image_id, all->results[i].image_id) << "k=" << k;
  }
  auto bytes = search_images(ctx(), by_bytes(query_variant(photos()[3].bytes), 2));
  ASSERT_TRUE(bytes.ok());
  EXPECT_LE(bytes->results.size(), 2u);
}

TEST_F(BuiltinSearch, OffsetPagesThroughTheSameRanking) {
  const std::string& id = photos()[3].id;
  auto all = search_images(ctx(), by_id(id));
  ASSERT_TRUE(all.ok()) << all.error().to_string();
  ASSERT_GE(all->results.size(), 7u);
  for (size_t offset : {0u, 3u, 6u}) {
    SearchQuery q = by_id(id, 3);
    q.offset = offset;
    auto page = search_images(ctx(), q);
    ASSERT_TRUE(page.ok()) << page.error().to_string();
    const size_t expected = std::min<size_t>(3, all->results.size() - offset);
    ASSERT_EQ(page->results.size(), expected) << "offset " << offset;
    for (size_t i = 0; i < expected; ++i)
      EXPECT_EQ(page->results[i].image_id, all->results[offset + i].image_id) << "offset " << offset << " #" << i;
  }
  SearchQuery past = by_id(id, 5);
  past.offset = all->results.size();
  auto none = search_images(ctx(), past);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->results.empty());
}

TEST_F(BuiltinSearch, FiltersKeepExactlyTheMatchingImages) {
  const Photo& query = photos()[0];
  // Excluded ids never come back; every other image still does.
  SearchQuery q = by_id(query.id);
  q.filter.exclude_ids = {photos()[1].id, photos()[2].id, photos()[5].id};
  auto r = search_images(ctx(), q);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  std::set<std::string> got;
  for (const auto& item : r->results) got.insert(item.image_id);
  std::set<std::string> expected;
  for (const auto& p : photos())
    if (p.id != query.id && p.id != photos()[1].id && p.id != photos()[2].id && p.id != photos()[5].id)
      expected.insert(p.id);
  EXPECT_EQ(got, expected);

  // Upload time: [cut, end) and [start, cut) split the tenant's images exactly.
  std::vector<Timestamp> times;
  for (const auto& p : photos()) times.push_back(ctx().store.get_image(kTenant, p.id)->created_at);
  std::vector<Timestamp> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  const Timestamp cut = sorted[sorted.size() / 2];
  ASSERT_LT(sorted.front(), cut) << "the photos were uploaded over more than one millisecond";
  SearchQuery late = by_id(query.id), early = by_id(query.id);
  late.filter.uploaded_after = cut;
  early.filter.uploaded_before = cut;
  auto late_r = search_images(ctx(), late), early_r = search_images(ctx(), early);
  ASSERT_TRUE(late_r.ok() && early_r.ok());
  std::set<std::string> late_ids, early_ids, want_late, want_early;
  for (const auto& item : late_r->results) late_ids.insert(item.image_id);
  for (const auto& item : early_r->results) early_ids.insert(item.image_id);
  for (size_t i = 0; i < photos().size(); ++i) {
    if (photos()[i].id == query.id) continue;
    (times[i] >= cut ? want_late : want_early).insert(photos()[i].id);
  }
  EXPECT_EQ(late_ids, want_late);
  EXPECT_EQ(early_ids, want_early);
  EXPECT_FALSE(want_late.empty());
  EXPECT_FALSE(want_early.empty());

  // Status: every image is completed.
  SearchQuery failed = by_id(query.id), completed = by_id(query.id);
  failed.filter.statuses = {ImageStatus::kFailed};
  completed.filter.statuses = {ImageStatus::kFailed, ImageStatus::kCompleted};
  EXPECT_TRUE(search_images(ctx(), failed)->results.empty());
  EXPECT_EQ(search_images(ctx(), completed)->results.size(), photos().size() - 1);

  // A filtered search still fills topK from further down the ranking.
  SearchQuery few = by_id(query.id, 3);
  few.filter.exclude_ids = {};
  auto unfiltered = search_images(ctx(), few);
  ASSERT_TRUE(unfiltered.ok());
  for (const auto& item : unfiltered->results) few.filter.exclude_ids.push_back(item.image_id);
  auto next = search_images(ctx(), few);
  ASSERT_TRUE(next.ok());
  ASSERT_EQ(next->results.size(), 3u);
  for (const auto& item : next->results)
    EXPECT_EQ(std::count(few.filter.exclude_ids.begin(), few.filter.exclude_ids.end(), item.image_id), 0);
}

TEST_F(BuiltinSearch, BadInputsAreRejectedWithTheField) {
  struct Case {
    const char* what;
    SearchQuery q;
    ErrorCode code;
    const char* field;
  };
  const std::string some_bytes = query_variant(photos()[0].bytes);
  auto with = [&](auto change) {
    SearchQuery q = by_id(photos()[0].id, 10, 0);
    change(q);
    return q;
  };
  const std::vector<Case> cases = {
      {"neither bytes nor id", with([](SearchQuery& q) { q.image_id.clear(); }), ErrorCode::kInvalidArgument, "image"},
      {"both bytes and id", with([&](SearchQuery& q) { q.image_bytes = some_bytes; }), ErrorCode::kInvalidArgument,
       "image"},
      {"topK 0", with([](SearchQuery& q) { q.top_k = 0; }), ErrorCode::kInvalidArgument, "topK"},
      {"topK 1001", with([](SearchQuery& q) { q.top_k = 1001; }), ErrorCode::kInvalidArgument, "topK"},
      {"minScore -1.5", with([](SearchQuery& q) { q.min_score = -1.5f; }), ErrorCode::kInvalidArgument, "minScore"},
      {"minScore 1.01", with([](SearchQuery& q) { q.min_score = 1.01f; }), ErrorCode::kInvalidArgument, "minScore"},
      {"minScore NaN", with([](SearchQuery& q) { q.min_score = std::numeric_limits<float>::quiet_NaN(); }),
       ErrorCode::kInvalidArgument, "minScore"},
      {"unknown model", with([](SearchQuery& q) { q.model = "resnet_9000"; }), ErrorCode::kNotFound, "model"},
      {"no model", with([](SearchQuery& q) { q.model.clear(); }), ErrorCode::kInvalidArgument, "model"},
      {"no tenant", with([](SearchQuery& q) { q.tenant_id.clear(); }), ErrorCode::kInvalidArgument, "tenantId"},
      {"offset 1001", with([](SearchQuery& q) { q.offset = 1001; }), ErrorCode::kInvalidArgument, "offset"},
      {"ef 1025", with([](SearchQuery& q) { q.ef = 1025; }), ErrorCode::kInvalidArgument, "ef"},
      {"1001 excluded ids", with([](SearchQuery& q) { q.filter.exclude_ids.assign(1001, "img_x"); }),
       ErrorCode::kInvalidArgument, "filter.excludeIds"},
      {"before == after", with([](SearchQuery& q) { q.filter.uploaded_after = q.filter.uploaded_before = Timestamp{}; }),
       ErrorCode::kInvalidArgument, "filter.uploadedBefore"},
  };
  for (const auto& c : cases) {
    auto r = search_images(ctx(), c.q);
    ASSERT_FALSE(r.ok()) << c.what;
    EXPECT_EQ(r.error().code, c.code) << c.what << ": " << r.error().to_string();
    EXPECT_EQ(context_of(r.error(), "field"), c.field) << c.what << ": " << r.error().to_string();
    EXPECT_FALSE(r.error().message.empty());
    std::printf("  %-22s -> %s\n", c.what, r.error().to_string().c_str());
  }
  // The limits themselves are accepted.
  EXPECT_TRUE(search_images(ctx(), with([](SearchQuery& q) { q.top_k = 1000; q.min_score = -1; })).ok());
  EXPECT_TRUE(search_images(ctx(), with([](SearchQuery& q) { q.top_k = 1; q.min_score = 1; })).ok());
  EXPECT_TRUE(search_images(ctx(), with([](SearchQuery& q) { q.ef = 1024; q.exact = true; q.offset = 1000; })).ok());
}

TEST_F(BuiltinSearch, HostileBytesAreRefusedWithTheImagingReason) {
  auto text = search_images(ctx(), by_bytes("this is not an image, it is a text file\n"));
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(context_of(text.error(), "reason"), "not_an_image") << text.error().to_string();

  std::string truncated = photos()[0].bytes.substr(0, photos()[0].bytes.size() / 2);
  auto cut = search_images(ctx(), by_bytes(truncated));
  ASSERT_FALSE(cut.ok());
  EXPECT_EQ(context_of(cut.error(), "reason"), "corrupt") << cut.error().to_string();

  // The configured limits apply to queries like to uploads.
  PipelineContext tight = ctx();
  tight.options.limits.max_bytes = 1000;
  auto big = search_images(tight, by_bytes(query_variant(photos()[0].bytes)));
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(context_of(big.error(), "reason"), "too_large") << big.error().to_string();
}

TEST_F(BuiltinSearch, AModelWithoutACollectionGivesNoResultsByBytesAndNotIndexedById) {
  SearchQuery q = by_bytes(query_variant(photos()[0].bytes));
  q.model = "unused";
  auto r = search_images(ctx(), q);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_TRUE(r->results.empty());
  EXPECT_EQ(r->collection, "tenant_acme-corp_unused_vectors");

  SearchQuery id = by_id(photos()[0].id);
  id.model = "unused";
  auto e = search_images(ctx(), id);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code, ErrorCode::kFailedPrecondition) << e.error().to_string();
  EXPECT_EQ(context_of(e.error(), "field"), "imageId");
  EXPECT_NE(e.error().message.find("unused"), std::string::npos) << e.error().message;
  std::printf("  %s\n", e.error().to_string().c_str());
}

TEST_F(BuiltinSearch, DeletedImagesAreSkippedAndTopKIsStillFilled) {
  // A second copy of a photo (resized): the closest match to that photo after the original.
  const Photo& p = photos()[4];
  const std::string copy = corpus_->node->upload(kTenant, "copy-of-" + p.name, query_variant(p.bytes), "builtin");
  ASSERT_TRUE(corpus_->node->run_until_all_completed(60s));
  auto before = search_images(ctx(), by_id(p.id, 3));
  ASSERT_TRUE(before.ok()) << before.error().to_string();
  print_results("before deletion, query: imageId of " + p.name, *before);
  ASSERT_EQ(before->results.size(), 3u);
  EXPECT_EQ(before->results[0].image_id, copy);

  ASSERT_TRUE(ctx().store.delete_image(kTenant, copy).ok());
  VectorIndex* index = ctx().vectors.find_collection(collection_name(kTenant, "builtin"));
  ASSERT_NE(index, nullptr);
  ASSERT_TRUE(index->get(copy).ok()) << "the vector lingers after the metadata is deleted";

  auto after = search_images(ctx(), by_id(p.id, 3));
  ASSERT_TRUE(after.ok()) << after.error().to_string();
  print_results("after deletion", *after);
  ASSERT_EQ(after->results.size(), 3u) << "top_k is still filled";
  for (const auto& item : after->results) EXPECT_NE(item.image_id, copy);
  EXPECT_EQ(after->results[0].image_id, before->results[1].image_id);
  EXPECT_EQ(after->results[1].image_id, before->results[2].image_id);

  // Every photo, whatever top_k: the deleted copy never shows.
  auto full = search_images(ctx(), by_id(p.id, 1000));
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->results.size(), photos().size() - 1);

  auto gone = search_images(ctx(), by_id(copy));
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, ErrorCode::kNotFound);
}

TEST_F(BuiltinSearch, ConcurrentSearchesAgree) {
  std::vector<std::vector<std::string>> expected;
  for (size_t i = 0; i < 4; ++i) {
    auto r = search_images(ctx(), by_id(photos()[i].id, 5));
    ASSERT_TRUE(r.ok());
    std::vector<std::string> ids;
    for (const auto& item : r->results) ids.push_back(item.image_id);
    expected.push_back(ids);
  }
  const std::string variant = query_variant(photos()[5].bytes);
  std::atomic<int> mismatches{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int n = 0; n < 25; ++n) {
        const size_t i = static_cast<size_t>((t + n) % 4);
        auto r = (n % 5 == 0) ? search_images(ctx(), by_bytes(variant, 1)) : search_images(ctx(), by_id(photos()[i].id, 5));
        if (!r) {
          ++errors;
          continue;
        }
        std::vector<std::string> ids;
        for (const auto& item : r->results) ids.push_back(item.image_id);
        const bool same = (n % 5 == 0) ? (ids.size() == 1 && ids[0] == photos()[5].id) : ids == expected[i];
        if (!same) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}

// ------------------------------------------------------------------------------------------------
// mobilenet_v2 through the model registry, as `deeplens serve` configures it.

TEST(MobilenetSearch, FindsOriginalsByResizedCopiesAndRanksByImageId) {
  ASSERT_TRUE(init_imaging().ok());
  const char* env = std::getenv("DEEPLENS_TEST_MODELS");
  const fs::path models_dir = env && *env ? fs::path(env) : fs::path(DEEPLENS_SOURCE_DIR) / ".." / "shared" / "models";
  ASSERT_TRUE(fs::is_directory(models_dir)) << "models directory " << models_dir
                                        << " is missing: set DEEPLENS_TEST_MODELS=DIR, or leave the model tests out "
                                           "with ctest -LE models";
  const fs::path model_file = models_dir / "mobilenet_v2_1.0_224_quint8.pb";
  ASSERT_TRUE(fs::exists(model_file)) << model_file;
  ConfigSection section = {{"name", "mobilenet_v2"},  {"file", model_file.string()},
                           {"output_layer", "embedding"}, {"dimension", "1280"},
                           {"mean", "127.5"},          {"scale", "0.00784313725490196"}};
  auto registry = app::build_model_registry({section});
  ASSERT_TRUE(registry.ok()) << registry.error().to_string();
  ModelRegistry& models = **registry;
  ASSERT_NE(models.find("mobilenet_v2"), nullptr);

  auto photos = load_photos();
  ASSERT_GE(photos.size(), 10u) << "needs python3-skimage and opencv-doc sample photos";
  SearchNode node([&models](const std::string& name) { return models.find(name); });
  for (auto& p : photos) p.id = node.upload(kTenant, p.name, p.bytes, "mobilenet_v2");
  ASSERT_TRUE(node.run_until_all_completed(300s));

  for (const auto& p : photos) {
    SearchQuery q;
    q.tenant_id = kTenant;
    q.model = "mobilenet_v2";
    q.top_k = 3;
    q.min_score = -1;
    q.image_bytes = query_variant(p.bytes);
    auto r = search_images(node.ctx(), q);
    ASSERT_TRUE(r.ok()) << p.name << ": " << r.error().to_string();
    print_results("mobilenet_v2, query: 300px JPEG of " + p.name, *r);
    EXPECT_EQ(r->collection, "tenant_acme-corp_mobilenet_v2_vectors");
    ASSERT_FALSE(r->results.empty());
    EXPECT_EQ(r->results[0].image_id, p.id) << p.name << " ranked first: " << r->results[0].image.file_name;
    EXPECT_EQ(r->results[0].image.file_name, p.name);
    EXPECT_GE(r->extraction_ms, 0);
  }

  SearchQuery q;
  q.tenant_id = kTenant;
  q.model = "mobilenet_v2";
  q.top_k = 100;
  q.min_score = -1;
  q.image_id = photos[1].id;
  auto r = search_images(node.ctx(), q);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  print_results("mobilenet_v2, query: imageId of " + photos[1].name, *r);
  ASSERT_EQ(r->results.size(), photos.size() - 1);
  for (const auto& item : r->results) EXPECT_NE(item.image_id, photos[1].id);
  for (size_t i = 1; i < r->results.size(); ++i) EXPECT_GE(r->results[i - 1].score, r->results[i].score);

  // The built-in model is registered too, but these images were never indexed with it.
  q.model = "builtin";
  auto e = search_images(node.ctx(), q);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_EQ(context_of(e.error(), "field"), "imageId");
  std::printf("  %s\n", e.error().to_string().c_str());
}

}  // namespace
}  // namespace deeplens
