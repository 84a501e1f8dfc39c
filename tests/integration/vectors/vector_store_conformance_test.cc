// One VectorStore / VectorIndex contract, checked against every backend: the embedded HNSW store
// and Qdrant in both multitenancy modes. Qdrant is the contract-checking stand-in
// (tests/support/qdrant_standin.py), or a real Qdrant when DEEPLENS_TEST_QDRANT_URL is set; after
// every Qdrant test the stand-in's record of contract violations must be empty, so a request that
// does not validate against Qdrant's OpenAPI document (or lacks the tenant filter) fails the test
// that sent it.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "support/qdrant_server.h"
#include "vectors/hnsw/hnsw_store.h"
#include "vectors/qdrant/qdrant_vector_store.h"

namespace deeplens {
namespace {

namespace fs = std::filesystem;
using testing::QdrantServer;

std::vector<float> random_vector(std::mt19937_64& rng, size_t dim) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> v(dim);
  for (auto& x : v) x = n(rng);
  return v;
}

double norm(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double{x} * x;
  return std::sqrt(s);
}

QdrantServer& qdrant() {
  static const auto server = std::make_unique<QdrantServer>();  // one per test binary
  return *server;
}

QdrantOptions qdrant_options(qdrant::Multitenancy mode) {
  QdrantOptions o;
  o.endpoint = qdrant().url();
  o.multitenancy = mode;
  o.timeout = std::chrono::milliseconds(10000);
  return o;
}

struct Backend {
  std::string name;
  bool qdrant = false;
  std::function<std::unique_ptr<VectorStore>(const fs::path& dir)> make;
};
void PrintTo(const Backend& b, std::ostream* os) { *os << b.name; }

class VectorStoreConformance : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("deeplens-vstore-" + std::to_string(::getpid()) + "-" + std::to_string(counter_));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    if (GetParam().qdrant) qdrant().clear_violations();
    store_ = GetParam().make(dir_);
    // Fresh tenants per test: a Qdrant's state outlives the test (and, when real, the run).
    tenant_ = "t" + std::to_string(counter_++) + "-" + std::to_string(::getpid()) + "-" +
              std::to_string(std::random_device{}() % 100000);
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
    if (GetParam().qdrant)
      for (const auto& v : qdrant().violations()) ADD_FAILURE() << "Qdrant contract violation: " << v;
  }
  // Models are per test too: in payload mode a model's collection (and dimension) is shared by
  // every tenant.
  std::string name(const std::string& model = "resnet50", const std::string& tenant = "") const {
    return collection_name(tenant.empty() ? tenant_ : tenant, model + "_" + tenant_);
  }
  VectorIndex& open(const std::string& collection, size_t dim) {
    auto index = store_->open_collection(collection, dim);
    EXPECT_TRUE(index.ok()) << index.error().to_string();
    if (!index) throw std::runtime_error("open_collection failed");
    return **index;
  }

  fs::path dir_;
  std::unique_ptr<VectorStore> store_;
  std::string tenant_;
  std::mt19937_64 rng_{42};
  static inline int counter_ = 0;
};

TEST_P(VectorStoreConformance, OpenCollectionCreatesItOnceWithItsDimension) {
  auto absent = store_->lookup_collection(name());
  ASSERT_TRUE(absent.ok()) << absent.error().to_string();
  EXPECT_EQ(*absent, nullptr);
  VectorIndex& index = open(name(), 8);
  EXPECT_EQ(index.name(), name());
  EXPECT_EQ(index.dimension(), 8u);
  EXPECT_EQ(index.count(), 0u);
  auto again = store_->open_collection(name(), 8);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, &index);
  EXPECT_EQ(store_->find_collection(name()), &index);
  auto other = store_->open_collection(name(), 16);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code, ErrorCode::kFailedPrecondition);
}

TEST_P(VectorStoreConformance, GetReturnsTheNormalisedVectorAndAbsentIdsAreNotFound) {
  VectorIndex& index = open(name(), 4);
  ASSERT_TRUE(index.upsert("img_a", std::vector<float>{3, 0, 4, 0}).ok());
  auto v = index.get("img_a");
  ASSERT_TRUE(v.ok()) << v.error().to_string();
  ASSERT_EQ(v->size(), 4u);
  EXPECT_NEAR((*v)[0], 0.6, 1e-6);
  EXPECT_NEAR((*v)[2], 0.8, 1e-6);
  EXPECT_NEAR(norm(*v), 1.0, 1e-6);
  auto missing = index.get("img_missing");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
}

TEST_P(VectorStoreConformance, UpsertOfAnExistingIdReplacesItsVectorAndKeepsTheCount) {
  VectorIndex& index = open(name(), 4);
  ASSERT_TRUE(index.upsert("img_a", std::vector<float>{1, 0, 0, 0}).ok());
  ASSERT_TRUE(index.upsert("img_b", std::vector<float>{0, 1, 0, 0}).ok());
  ASSERT_TRUE(index.upsert("img_a", std::vector<float>{0, 0, 1, 0}).ok());
  EXPECT_EQ(index.count(), 2u);
  auto hits = index.search(std::vector<float>{0, 0, 1, 0}, 1, -1.0f);
  ASSERT_TRUE(hits.ok()) << hits.error().to_string();
  ASSERT_EQ(hits->size(), 1u);
  EXPECT_EQ((*hits)[0].id, "img_a");
  EXPECT_NEAR((*hits)[0].score, 1.0, 1e-5);
}

TEST_P(VectorStoreConformance, RemoveMakesAnIdUnsearchableAndIsIdempotent) {
  VectorIndex& index = open(name(), 4);
  ASSERT_TRUE(index.upsert("img_a", std::vector<float>{1, 0, 0, 0}).ok());
  ASSERT_TRUE(index.upsert("img_b", std::vector<float>{0.9f, 0.1f, 0, 0}).ok());
  ASSERT_TRUE(index.remove("img_a").ok());
  ASSERT_TRUE(index.remove("img_a").ok());
  ASSERT_TRUE(index.remove("img_never").ok());
  EXPECT_EQ(index.count(), 1u);
  auto hits = index.search(std::vector<float>{1, 0, 0, 0}, 10, -1.0f);
  ASSERT_TRUE(hits.ok());
  ASSERT_EQ(hits->size(), 1u);
  EXPECT_EQ((*hits)[0].id, "img_b");
  EXPECT_EQ(index.get("img_a").error().code, ErrorCode::kNotFound);
}

TEST_P(VectorStoreConformance, SearchReturnsUpToKBestFirstAboveMinScore) {
  VectorIndex& index = open(name(), 8);
  std::vector<std::vector<float>> vs;
  for (int i = 0; i < 60; ++i) {
    vs.push_back(random_vector(rng_, 8));
    ASSERT_TRUE(index.upsert("img_" + std::to_string(i), vs.back()).ok());
  }
  const auto& query = vs[7];
  auto hits = index.search(query, 5, -1.0f);
  ASSERT_TRUE(hits.ok()) << hits.error().to_string();
  ASSERT_EQ(hits->size(), 5u);
  EXPECT_EQ((*hits)[0].id, "img_7");
  EXPECT_NEAR((*hits)[0].score, 1.0, 1e-5);
  for (size_t i = 1; i < hits->size(); ++i) EXPECT_GE((*hits)[i - 1].score, (*hits)[i].score);
  auto above = index.search(query, 60, 0.5f);
  ASSERT_TRUE(above.ok());
  ASSERT_FALSE(above->empty());
  for (const auto& h : *above) EXPECT_GE(h.score, 0.5f);
  EXPECT_LT(above->size(), 60u);
  auto none = index.search(query, 0, -1.0f);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  // Per-query options (Qdrant: params.hnsw_ef / params.exact) give the same best hits here.
  for (const SearchOptions& o : {SearchOptions{200, false}, SearchOptions{0, true}, SearchOptions{50, true}}) {
    auto tuned = index.search(query, 5, -1.0f, o);
    ASSERT_TRUE(tuned.ok()) << tuned.error().to_string();
    ASSERT_EQ(tuned->size(), 5u);
    for (size_t i = 0; i < 5; ++i) EXPECT_EQ((*tuned)[i].id, (*hits)[i].id) << "ef " << o.ef << " exact " << o.exact;
  }
}

TEST_P(VectorStoreConformance, BadVectorsAreRejectedAndABadBatchChangesNothing) {
  VectorIndex& index = open(name(), 4);
  EXPECT_EQ(index.upsert("img_a", std::vector<float>{1, 0, 0}).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(index.upsert("img_a", std::vector<float>{1, NAN, 0, 0}).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(index.upsert("", std::vector<float>{1, 0, 0, 0}).error().code, ErrorCode::kInvalidArgument);
  const std::vector<float> good{1, 0, 0, 0}, bad{1, 0};
  const VectorUpsert batch[] = {{"img_good", good}, {"img_bad", bad}};
  EXPECT_EQ(index.upsert_batch(batch).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(index.count(), 0u);
  EXPECT_EQ(index.search(std::vector<float>{1, 0}, 3, -1.0f).error().code, ErrorCode::kInvalidArgument);
}

TEST_P(VectorStoreConformance, BatchUpsertAppliesEverythingAndALaterDuplicateWins) {
  VectorIndex& index = open(name(), 4);
  const std::vector<float> a{1, 0, 0, 0}, b{0, 1, 0, 0}, a2{0, 0, 0, 1};
  const VectorUpsert batch[] = {{"img_a", a}, {"img_b", b}, {"img_a", a2}};
  ASSERT_TRUE(index.upsert_batch(batch).ok());
  EXPECT_EQ(index.count(), 2u);
  auto v = index.get("img_a");
  ASSERT_TRUE(v.ok());
  EXPECT_NEAR((*v)[3], 1.0, 1e-6);
}

TEST_P(VectorStoreConformance, IdsListsEveryStoredIdAcrossPages) {
  VectorIndex& index = open(name(), 4);
  std::vector<std::vector<float>> vs;
  std::vector<std::string> names;
  for (int i = 0; i < 1100; ++i) {  // more than one page of Qdrant's scroll (1000)
    vs.push_back(random_vector(rng_, 4));
    names.push_back("img_" + std::to_string(i));
  }
  std::vector<VectorUpsert> batch;
  for (size_t i = 0; i < vs.size(); ++i) batch.push_back({names[i], vs[i]});
  ASSERT_TRUE(index.upsert_batch(batch).ok());
  auto ids = index.ids();
  EXPECT_EQ(ids.size(), 1100u);
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()), std::set<std::string>(names.begin(), names.end()));
}

TEST_P(VectorStoreConformance, TenantsNeverSeeEachOthersVectors) {
  const std::string other = tenant_ + "x";
  VectorIndex& mine = open(name(), 4);
  VectorIndex& theirs = open(name("resnet50", other), 4);
  ASSERT_NE(&mine, &theirs);
  ASSERT_TRUE(mine.upsert("img_mine", std::vector<float>{1, 0, 0, 0}).ok());
  ASSERT_TRUE(theirs.upsert("img_theirs", std::vector<float>{1, 0, 0, 0}).ok());
  // The same image id in two tenants (never issued, but the store must not rely on that).
  ASSERT_TRUE(theirs.upsert("img_mine", std::vector<float>{0, 1, 0, 0}).ok());
  auto hits = mine.search(std::vector<float>{1, 0, 0, 0}, 10, -1.0f);
  ASSERT_TRUE(hits.ok());
  ASSERT_EQ(hits->size(), 1u);
  EXPECT_EQ((*hits)[0].id, "img_mine");
  EXPECT_EQ(mine.count(), 1u);
  EXPECT_EQ(theirs.count(), 2u);
  EXPECT_EQ(mine.ids(), std::vector<std::string>{"img_mine"});
  EXPECT_NEAR((*mine.get("img_mine"))[0], 1.0, 1e-6);
  ASSERT_TRUE(theirs.remove("img_mine").ok());
  EXPECT_EQ(mine.count(), 1u);
  EXPECT_TRUE(mine.get("img_mine").ok());
}

TEST_P(VectorStoreConformance, StatsNameEveryCollectionWithItsCount) {
  VectorIndex& a = open(name("resnet50"), 4);
  VectorIndex& b = open(name("mobilenet_v2"), 3);
  ASSERT_TRUE(a.upsert("img_1", std::vector<float>{1, 0, 0, 0}).ok());
  ASSERT_TRUE(a.upsert("img_2", std::vector<float>{0, 1, 0, 0}).ok());
  ASSERT_TRUE(b.upsert("img_1", std::vector<float>{1, 0, 0}).ok());
  std::map<std::string, CollectionStats> by_name;
  for (const auto& s : store_->stats()) by_name[s.name] = s;
  ASSERT_TRUE(by_name.count(a.name())) << a.name();
  ASSERT_TRUE(by_name.count(b.name())) << b.name();
  EXPECT_EQ(by_name[a.name()].count, 2u);
  EXPECT_EQ(by_name[a.name()].dimension, 4u);
  EXPECT_EQ(by_name[b.name()].count, 1u);
  EXPECT_EQ(by_name[b.name()].dimension, 3u);
}

TEST_P(VectorStoreConformance, SearchesRunConcurrentlyWithWrites) {
  VectorIndex& index = open(name(), 8);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(index.upsert("img_seed" + std::to_string(i), random_vector(rng_, 8)).ok());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      for (int i = 0; i < 15; ++i) {
        const std::string id = "img_" + std::to_string(t) + "_" + std::to_string(i);
        if (t % 2 == 0) {
          if (!index.upsert(id, random_vector(rng, 8)).ok()) ++failures;
        } else {
          auto hits = index.search(random_vector(rng, 8), 5, -1.0f);
          if (!hits || hits->size() != 5) ++failures;
        }
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(index.count(), 20u + 2 * 15);
}

INSTANTIATE_TEST_SUITE_P(
    Backends, VectorStoreConformance,
    ::testing::Values(Backend{"embedded", false,
                              [](const fs::path& dir) -> std::unique_ptr<VectorStore> {
                                auto s = HnswVectorStore::open((dir / "vectors").string());
                                EXPECT_TRUE(s.ok());
                                return std::move(s).value();
                              }},
                      Backend{"qdrant", true,
                              [](const fs::path&) -> std::unique_ptr<VectorStore> {
                                return QdrantVectorStore::open(qdrant_options(qdrant::Multitenancy::kCollection));
                              }},
                      Backend{"qdrant_payload", true,
                              [](const fs::path&) -> std::unique_ptr<VectorStore> {
                                return QdrantVectorStore::open(qdrant_options(qdrant::Multitenancy::kPayload));
                              }}),
    [](const ::testing::TestParamInfo<Backend>& info) { return info.param.name; });

}  // namespace
}  // namespace deeplens
