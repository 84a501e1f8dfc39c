#include "vectors/hnsw/hnsw_store.h"

#include <chrono>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "test_support.h"

namespace deeplens {
namespace {

using testing::TempDir;
using testing::random_vector;
namespace fs = std::filesystem;

TEST(HnswVectorStore, OpenCollectionCreatesItOnceWithItsDimension) {
  TempDir dir;
  auto store = HnswVectorStore::open(dir.sub("store"));
  ASSERT_TRUE(store.ok()) << store.error().to_string();
  const std::string name = collection_name("acme-corp", "resnet50");
  EXPECT_EQ((*store)->find_collection(name), nullptr);
  auto created = (*store)->open_collection(name, 8);
  ASSERT_TRUE(created.ok()) << created.error().to_string();
  EXPECT_TRUE(fs::exists(dir.sub("store/" + name + "/collection.meta")));
  EXPECT_EQ((*store)->find_collection(name), *created);
  auto again = (*store)->open_collection(name, 8);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *created);
  auto other_dim = (*store)->open_collection(name, 16);
  ASSERT_FALSE(other_dim.ok());
  EXPECT_EQ(other_dim.error().code, ErrorCode::kFailedPrecondition);
}

TEST(HnswVectorStore, RejectsCollectionNamesThatAreNotSafeDirectoryNames) {
  TempDir dir;
  auto store = HnswVectorStore::open(dir.path());
  ASSERT_TRUE(store.ok());
  for (const char* bad : {"", "../x", "a/b", "UPPER", "dot.name", "."}) {
    auto r = (*store)->open_collection(bad, 4);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  }
  EXPECT_EQ((*store)->open_collection("ok_name", 0).error().code, ErrorCode::kInvalidArgument);
}

TEST(HnswVectorStore, ReopenFindsEveryCollectionWithItsVectors) {
  TempDir dir;
  std::mt19937_64 rng(1);
  const auto v = random_vector(rng, 8);
  {
    auto store = HnswVectorStore::open(dir.path());
    ASSERT_TRUE(store.ok());
    auto a = (*store)->open_collection("tenant_a_m_vectors", 8);
    auto b = (*store)->open_collection("tenant_b_m_vectors", 4);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_TRUE((*a)->upsert("img_1", v).ok());
    ASSERT_TRUE((*a)->upsert("img_2", random_vector(rng, 8)).ok());
    ASSERT_TRUE((*store)->checkpoint().ok());
    ASSERT_TRUE((*a)->upsert("img_3", random_vector(rng, 8)).ok());
  }
  auto store = HnswVectorStore::open(dir.path());
  ASSERT_TRUE(store.ok());
  const auto stats = (*store)->stats();
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_EQ(stats[0].name, "tenant_a_m_vectors");
  EXPECT_EQ(stats[0].dimension, 8u);
  EXPECT_EQ(stats[0].count, 3u);
  EXPECT_EQ(stats[1].name, "tenant_b_m_vectors");
  EXPECT_EQ(stats[1].count, 0u);
  auto* a = (*store)->find_collection("tenant_a_m_vectors");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ((*a->search(v, 1, 0.0f))[0].id, "img_1");
}

TEST(HnswVectorStore, OnlyOneStoreAtATimeOwnsARoot) {
  TempDir dir;
  auto first = HnswVectorStore::open(dir.path());
  ASSERT_TRUE(first.ok());
  auto second = HnswVectorStore::open(dir.path());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, ErrorCode::kFailedPrecondition);
  first->reset();
  EXPECT_TRUE(HnswVectorStore::open(dir.path()).ok());
}

TEST(HnswVectorStore, BackgroundCheckpointerSnapshotsAGrowingLog) {
  TempDir dir;
  HnswOptions options;
  options.checkpoint_log_bytes = 1024;
  options.checkpoint_poll_interval = std::chrono::milliseconds(5);
  auto store = HnswVectorStore::open(dir.path(), options);
  ASSERT_TRUE(store.ok());
  (*store)->start();
  auto c = (*store)->open_collection("tenant_a_m_vectors", 16);
  ASSERT_TRUE(c.ok());
  std::mt19937_64 rng(2);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE((*c)->upsert("img_" + std::to_string(i), random_vector(rng, 16)).ok());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!fs::exists(dir.sub("tenant_a_m_vectors/CURRENT")) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(fs::exists(dir.sub("tenant_a_m_vectors/CURRENT")));
  (*store)->stop();
  (*store)->stop();  // idempotent
  store->reset();
  auto reopened = HnswVectorStore::open(dir.path(), options);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*reopened)->find_collection("tenant_a_m_vectors")->count(), 40u);
}

}  // namespace
}  // namespace deeplens
