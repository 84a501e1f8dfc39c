#include "vectors/hnsw/hnsw_index.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "test_support.h"

namespace deeplens {
namespace {

using testing::TempDir;
using testing::random_vector;
using testing::normalise;
namespace fs = std::filesystem;

constexpr size_t kDim = 32;

HnswOptions small_options() {
  HnswOptions o;
  o.initial_capacity = 16;  // exercise growth
  return o;
}

std::unique_ptr<HnswIndex> create_index(const std::string& dir, HnswOptions options = small_options(),
                                        size_t dim = kDim) {
  auto index = HnswIndex::create(dir, "tenant_t_m_vectors", dim, options);
  EXPECT_TRUE(index.ok()) << index.error().to_string();
  return index.ok() ? std::move(*index) : nullptr;
}

std::unique_ptr<HnswIndex> reopen(const std::string& dir, HnswOptions options = small_options()) {
  auto index = HnswIndex::open(dir, "tenant_t_m_vectors", options);
  EXPECT_TRUE(index.ok()) << index.error().to_string();
  return index.ok() ? std::move(*index) : nullptr;
}

std::vector<std::string> log_segments(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().starts_with("wal-")) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void expect_vector_near(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6) << "at " << i;
}

TEST(HnswIndex, GetReturnsTheNormalisedVector) {
  TempDir dir;
  auto index = create_index(dir.path());
  std::vector<float> v(kDim, 0.0f);
  v[0] = 3;
  v[1] = 4;
  ASSERT_TRUE(index->upsert("img_1", v).ok());
  auto got = index->get("img_1");
  ASSERT_TRUE(got.ok());
  EXPECT_NEAR((*got)[0], 0.6f, 1e-6);
  EXPECT_NEAR((*got)[1], 0.8f, 1e-6);
  EXPECT_EQ(index->count(), 1u);
  EXPECT_EQ(index->dimension(), kDim);
  EXPECT_EQ(index->get("img_2").error().code, ErrorCode::kNotFound);
}

TEST(HnswIndex, UpsertOfAnExistingIdReplacesItsVectorAndKeepsTheCount) {
  TempDir dir;
  auto index = create_index(dir.path());
  std::mt19937_64 rng(1);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(index->upsert("img_" + std::to_string(i), random_vector(rng, kDim)).ok());
  const auto replacement = random_vector(rng, kDim);
  ASSERT_TRUE(index->upsert("img_7", replacement).ok());
  ASSERT_TRUE(index->upsert("img_7", replacement).ok());  // at-least-once redelivery
  EXPECT_EQ(index->count(), 50u);
  expect_vector_near(*index->get("img_7"), normalise(replacement));
  auto hits = index->search(replacement, 1, -1.0f);
  ASSERT_TRUE(hits.ok());
  ASSERT_EQ(hits->size(), 1u);
  EXPECT_EQ((*hits)[0].id, "img_7");
  EXPECT_NEAR((*hits)[0].score, 1.0f, 1e-5);
}

TEST(HnswIndex, RemoveMakesAnIdUnsearchableAndIsIdempotent) {
  TempDir dir;
  auto index = create_index(dir.path());
  std::mt19937_64 rng(2);
  const auto v = random_vector(rng, kDim);
  ASSERT_TRUE(index->upsert("gone", v).ok());
  ASSERT_TRUE(index->upsert("kept", random_vector(rng, kDim)).ok());
  ASSERT_TRUE(index->remove("gone").ok());
  ASSERT_TRUE(index->remove("gone").ok());
  ASSERT_TRUE(index->remove("never-there").ok());
  EXPECT_EQ(index->count(), 1u);
  EXPECT_EQ(index->get("gone").error().code, ErrorCode::kNotFound);
  auto hits = index->search(v, 10, -1.0f);
  ASSERT_TRUE(hits.ok());
  ASSERT_EQ(hits->size(), 1u);
  EXPECT_EQ((*hits)[0].id, "kept");
  // A removed id can come back.
  ASSERT_TRUE(index->upsert("gone", v).ok());
  EXPECT_EQ(index->count(), 2u);
  EXPECT_EQ((*index->search(v, 1, -1.0f))[0].id, "gone");
}

TEST(HnswIndex, SearchReturnsBestFirstAboveMinScore) {
  TempDir dir;
  auto index = create_index(dir.path());
  std::vector<float> q(kDim, 0.0f);
  q[0] = 1;
  // Scores 1.0, 0.8, 0.6, 0.0, -1.0 against q.
  const std::vector<std::pair<std::string, std::pair<float, float>>> items = {
      {"same", {1, 0}}, {"close", {0.8f, 0.6f}}, {"mid", {0.6f, 0.8f}}, {"orthogonal", {0, 1}}, {"opposite", {-1, 0}}};
  for (const auto& [id, xy] : items) {
    std::vector<float> v(kDim, 0.0f);
    v[0] = xy.first;
    v[1] = xy.second;
    ASSERT_TRUE(index->upsert(id, v).ok());
  }
  auto all = index->search(q, 10, -1.0f);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 5u);
  EXPECT_EQ((*all)[0].id, "same");
  EXPECT_EQ((*all)[1].id, "close");
  EXPECT_EQ((*all)[4].id, "opposite");
  EXPECT_NEAR((*all)[1].score, 0.8f, 1e-5);
  EXPECT_NEAR((*all)[4].score, -1.0f, 1e-5);
  for (size_t i = 1; i < all->size(); ++i) EXPECT_GE((*all)[i - 1].score, (*all)[i].score);

  auto filtered = index->search(q, 10, 0.5f);
  ASSERT_TRUE(filtered.ok());
  ASSERT_EQ(filtered->size(), 3u);
  EXPECT_EQ(filtered->back().id, "mid");
  EXPECT_EQ(index->search(q, 2, -1.0f)->size(), 2u);
  EXPECT_TRUE(index->search(q, 0, -1.0f)->empty());
}

TEST(HnswIndex, RejectsBadVectorsAndIdsWithInvalidArgument) {
  TempDir dir;
  auto index = create_index(dir.path());
  std::vector<float> good(kDim, 1.0f);
  std::vector<float> short_v(kDim - 1, 1.0f);
  std::vector<float> nan_v = good;
  nan_v[3] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> inf_v = good;
  inf_v[5] = std::numeric_limits<float>::infinity();
  std::vector<float> zero(kDim, 0.0f);
  for (const auto* bad : {&short_v, &nan_v, &inf_v, &zero}) {
    auto s = index->upsert("img", *bad);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument) << s.error().to_string();
    auto q = index->search(*bad, 5, -1.0f);
    ASSERT_FALSE(q.ok());
    EXPECT_EQ(q.error().code, ErrorCode::kInvalidArgument);
  }
  EXPECT_EQ(index->upsert("", good).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(index->upsert(std::string(5000, 'x'), good).error().code, ErrorCode::kInvalidArgument);
  // One bad element rejects the whole batch.
  const std::vector<VectorUpsert> batch = {{"a", good}, {"b", nan_v}};
  EXPECT_EQ(index->upsert_batch(batch).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(index->count(), 0u);
  EXPECT_TRUE(index->search(good, 5, -1.0f)->empty());
}

TEST(HnswIndex, BatchUpsertAppliesEverythingAndALaterDuplicateWins) {
  TempDir dir;
  auto index = create_index(dir.path());
  std::mt19937_64 rng(3);
  std::vector<std::vector<float>> vectors;
  std::vector<std::string> ids;
  for (int i = 0; i < 200; ++i) {
    vectors.push_back(random_vector(rng, kDim));
    ids.push_back("img_" + std::to_string(i % 150));  // ids 0..49 twice
  }
  std::vector<VectorUpsert> batch;
  for (size_t i = 0; i < ids.size(); ++i) batch.push_back({ids[i], vectors[i]});
  ASSERT_TRUE(index->upsert_batch(batch).ok());
  EXPECT_EQ(index->count(), 150u);
  expect_vector_near(*index->get("img_10"), normalise(vectors[160]));
  expect_vector_near(*index->get("img_100"), normalise(vectors[100]));
}

TEST(HnswIndex, ExactAndHnswSearchAgreeOnASmallCollection) {
  TempDir dir;
  HnswOptions exact = small_options();
  exact.exact_search_below = 1'000'000;
  HnswOptions graph = small_options();
  graph.exact_search_below = 0;
  auto a = create_index(dir.sub("exact"), exact);
  auto b = create_index(dir.sub("graph"), graph);
  std::mt19937_64 rng(4);
  std::vector<VectorUpsert> batch;
  std::vector<std::vector<float>> vectors;
  std::vector<std::string> ids;
  for (int i = 0; i < 2000; ++i) {
    vectors.push_back(random_vector(rng, kDim));
    ids.push_back("img_" + std::to_string(i));
  }
  for (int i = 0; i < 2000; ++i) batch.push_back({ids[i], vectors[i]});
  ASSERT_TRUE(a->upsert_batch(batch).ok());
  ASSERT_TRUE(b->upsert_batch(batch).ok());
  size_t overlap = 0, top1 = 0;
  constexpr int kQueries = 50;
  for (int q = 0; q < kQueries; ++q) {
    const auto query = random_vector(rng, kDim);
    auto ea = a->search(query, 10, -1.0f);
    auto eb = b->search(query, 10, -1.0f);
    ASSERT_TRUE(ea.ok() && eb.ok());
    ASSERT_EQ(ea->size(), 10u);
    ASSERT_EQ(eb->size(), 10u);
    for (size_t i = 1; i < ea->size(); ++i) ASSERT_GE((*ea)[i - 1].score, (*ea)[i].score);
    top1 += (*ea)[0].id == (*eb)[0].id;
    std::set<std::string> truth;
    for (const auto& h : *ea) truth.insert(h.id);
    for (const auto& h : *eb) overlap += truth.count(h.id);
  }
  EXPECT_GE(top1, kQueries - 1u);
  EXPECT_GE(double(overlap) / (kQueries * 10), 0.95);
}

// Per-query SearchOptions: `exact` gives the brute-force answer on a graph-searched collection,
// and `ef` raises this query's candidate list above the index's own (a deliberately poor 4 here)
// without changing it for anyone else.
TEST(HnswIndex, EfGrowsWithTheCollectionPastTheBaseSizeAndNeverShrinks) {
  EXPECT_EQ(ef_for_size(64, 0), 64u);
  EXPECT_EQ(ef_for_size(64, 100000), 64u);
  EXPECT_EQ(ef_for_size(64, kEfBaseVectors), 64u);
  EXPECT_EQ(ef_for_size(64, 2 * kEfBaseVectors), 96u);  // 1.5x at 500k
  EXPECT_EQ(ef_for_size(64, 4 * kEfBaseVectors), 128u);  // 2x at 1M: recall@10 0.98 (bench/README.md)
  EXPECT_EQ(ef_for_size(64, 8 * kEfBaseVectors), 160u);
  EXPECT_EQ(ef_for_size(10, 4 * kEfBaseVectors), 24u);  // rounded up to a multiple of 8
  size_t last = 0;
  for (size_t n = 1000; n < 100000000; n = n * 3 / 2) {
    const size_t ef = ef_for_size(48, n);
    EXPECT_GE(ef, last) << n;
    EXPECT_GE(ef, 48u);
    last = ef;
  }
}

TEST(HnswIndex, PerQueryEfRaisesRecallAndExactMatchesBruteForce) {
  TempDir dir;
  HnswOptions options = small_options();
  options.exact_search_below = 0;
  options.ef_search = 4;
  auto index = create_index(dir.path(), options);
  std::mt19937_64 rng(11);
  std::vector<std::vector<float>> vectors;
  std::vector<std::string> ids;
  for (int i = 0; i < 3000; ++i) {
    vectors.push_back(random_vector(rng, kDim));
    ids.push_back("img_" + std::to_string(i));
  }
  std::vector<VectorUpsert> batch;
  for (int i = 0; i < 3000; ++i) batch.push_back({ids[i], vectors[i]});
  ASSERT_TRUE(index->upsert_batch(batch).ok());
  constexpr int kQueries = 40;
  constexpr size_t kK = 10;
  size_t found_default = 0, found_ef = 0, found_default_after = 0;
  for (int q = 0; q < kQueries; ++q) {
    const auto query = normalise(random_vector(rng, kDim));
    // Brute force, computed here.
    std::vector<std::pair<float, std::string>> all;
    for (size_t i = 0; i < vectors.size(); ++i) {
      const auto v = normalise(vectors[i]);
      float dot = 0;
      for (size_t d = 0; d < kDim; ++d) dot += v[d] * query[d];
      all.emplace_back(dot, ids[i]);
    }
    std::partial_sort(all.begin(), all.begin() + kK, all.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    std::set<std::string> truth;
    for (size_t i = 0; i < kK; ++i) truth.insert(all[i].second);

    auto exact = index->search(query, kK, -1.0f, SearchOptions{0, true});
    ASSERT_TRUE(exact.ok());
    ASSERT_EQ(exact->size(), kK);
    for (size_t i = 0; i < kK; ++i) EXPECT_EQ((*exact)[i].id, all[i].second) << "query " << q << " #" << i;

    auto plain = index->search(query, kK, -1.0f);
    auto wide = index->search(query, kK, -1.0f, SearchOptions{256, false});
    auto plain_again = index->search(query, kK, -1.0f);
    ASSERT_TRUE(plain.ok() && wide.ok() && plain_again.ok());
    ASSERT_EQ(wide->size(), kK);
    for (const auto& h : *plain) found_default += truth.count(h.id);
    for (const auto& h : *wide) found_ef += truth.count(h.id);
    for (const auto& h : *plain_again) found_default_after += truth.count(h.id);
  }
  const double recall_default = double(found_default) / (kQueries * kK);
  const double recall_ef = double(found_ef) / (kQueries * kK);
  std::printf("recall@10 with ef 4: %.3f, with ef 256 for the query: %.3f\n", recall_default, recall_ef);
  EXPECT_GE(recall_ef, 0.97);
  EXPECT_GT(recall_ef, recall_default);
  EXPECT_EQ(found_default_after, found_default) << "the per-query ef did not change the index's";
}

TEST(HnswIndex, ReopenAfterCloseRestoresEverythingFromTheLog) {
  TempDir dir;
  std::mt19937_64 rng(5);
  std::vector<std::vector<float>> vectors;
  {
    auto index = create_index(dir.path());
    for (int i = 0; i < 100; ++i) {
      vectors.push_back(random_vector(rng, kDim));
      ASSERT_TRUE(index->upsert("img_" + std::to_string(i), vectors.back()).ok());
    }
    ASSERT_TRUE(index->remove("img_3").ok());
    ASSERT_TRUE(index->upsert("img_4", vectors[0]).ok());
  }
  auto index = reopen(dir.path());
  EXPECT_EQ(index->count(), 99u);
  EXPECT_EQ(index->open_report().records_replayed, 102u);
  EXPECT_EQ(index->get("img_3").error().code, ErrorCode::kNotFound);
  expect_vector_near(*index->get("img_4"), normalise(vectors[0]));
  expect_vector_near(*index->get("img_99"), normalise(vectors[99]));
  EXPECT_EQ((*index->search(vectors[50], 1, -1.0f))[0].id, "img_50");
}

TEST(HnswIndex, CheckpointReplacesTheLogAndReopenLoadsTheSnapshotPlusTheNewLog) {
  TempDir dir;
  std::mt19937_64 rng(6);
  std::vector<std::vector<float>> vectors;
  for (int i = 0; i < 300; ++i) vectors.push_back(random_vector(rng, kDim));
  {
    auto index = create_index(dir.path());
    for (int i = 0; i < 200; ++i) ASSERT_TRUE(index->upsert("img_" + std::to_string(i), vectors[i]).ok());
    ASSERT_TRUE(index->remove("img_0").ok());
    ASSERT_TRUE(index->checkpoint().ok());
    EXPECT_EQ(index->log_bytes_since_checkpoint(), 0u);
    ASSERT_TRUE(index->checkpoint().ok());  // nothing changed: a no-op
    const auto segments = log_segments(dir.path());
    ASSERT_EQ(segments.size(), 1u);
    EXPECT_EQ(fs::file_size(segments[0]), 0u);
    // After the snapshot: more inserts, a replacement, a remove, and reuse of a removed label.
    for (int i = 200; i < 300; ++i) ASSERT_TRUE(index->upsert("img_" + std::to_string(i), vectors[i]).ok());
    ASSERT_TRUE(index->upsert("img_5", vectors[299]).ok());
    ASSERT_TRUE(index->remove("img_6").ok());
  }
  {
    auto index = reopen(dir.path());
    EXPECT_EQ(index->open_report().snapshot_generation, 1u);
    EXPECT_EQ(index->open_report().snapshot_vectors, 199u);
    EXPECT_EQ(index->open_report().records_replayed, 102u);
    EXPECT_EQ(index->count(), 298u);
    EXPECT_EQ(index->get("img_0").error().code, ErrorCode::kNotFound);
    EXPECT_EQ(index->get("img_6").error().code, ErrorCode::kNotFound);
    expect_vector_near(*index->get("img_5"), normalise(vectors[299]));
    expect_vector_near(*index->get("img_250"), normalise(vectors[250]));
    ASSERT_TRUE(index->checkpoint().ok());
  }
  auto index = reopen(dir.path());
  EXPECT_EQ(index->open_report().snapshot_generation, 2u);
  EXPECT_EQ(index->open_report().records_replayed, 0u);
  EXPECT_EQ(index->count(), 298u);
  EXPECT_EQ((*index->search(vectors[123], 1, -1.0f))[0].id, "img_123");
  // Only the files of the current snapshot and its log remain.
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(dir.path())) files.insert(e.path().filename().string());
  EXPECT_EQ(files, (std::set<std::string>{"CURRENT", "collection.meta", "snapshot-00000000000000000002.hnsw",
                                          "snapshot-00000000000000000002.ids", "wal-00000000000000000002.log"}));
}

TEST(HnswIndex, ATornFinalLogRecordIsDroppedAndTheLogStaysUsable) {
  TempDir dir;
  std::mt19937_64 rng(7);
  std::vector<std::vector<float>> vectors;
  for (int i = 0; i < 12; ++i) vectors.push_back(random_vector(rng, kDim));
  {
    auto index = create_index(dir.path());
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(index->upsert("img_" + std::to_string(i), vectors[i]).ok());
  }
  const std::string wal = log_segments(dir.path()).at(0);
  fs::resize_file(wal, fs::file_size(wal) - 7);  // the last record loses its tail
  {
    auto index = reopen(dir.path());
    EXPECT_EQ(index->count(), 9u);
    EXPECT_EQ(index->get("img_9").error().code, ErrorCode::kNotFound);
    EXPECT_GT(index->open_report().torn_bytes_dropped, 0u);
    ASSERT_TRUE(index->upsert("img_10", vectors[10]).ok());
  }
  {
    std::ofstream(wal, std::ios::binary | std::ios::app) << "garbage after the last record";
  }
  {
    auto index = reopen(dir.path());
    EXPECT_EQ(index->count(), 10u);
    expect_vector_near(*index->get("img_10"), normalise(vectors[10]));
    ASSERT_TRUE(index->upsert("img_11", vectors[11]).ok());
  }
  auto index = reopen(dir.path());
  EXPECT_EQ(index->count(), 11u);
  EXPECT_EQ(index->open_report().torn_bytes_dropped, 0u);
}

TEST(HnswIndex, LeftoversOfAnInterruptedCheckpointAreIgnoredAndRemoved) {
  TempDir dir;
  std::mt19937_64 rng(8);
  {
    auto index = create_index(dir.path());
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(index->upsert("img_" + std::to_string(i), random_vector(rng, kDim)).ok());
    ASSERT_TRUE(index->checkpoint().ok());
    ASSERT_TRUE(index->upsert("img_20", random_vector(rng, kDim)).ok());
  }
  // A crash after the next snapshot's files were written but before CURRENT named them.
  std::ofstream(dir.sub("snapshot-00000000000000000002.hnsw.tmp")) << "partial";
  std::ofstream(dir.sub("snapshot-00000000000000000002.ids")) << "unreferenced";
  std::ofstream(dir.sub("CURRENT.tmp")) << "snapshot 2\n";
  auto index = reopen(dir.path());
  EXPECT_EQ(index->count(), 21u);
  EXPECT_FALSE(fs::exists(dir.sub("snapshot-00000000000000000002.hnsw.tmp")));
  EXPECT_FALSE(fs::exists(dir.sub("snapshot-00000000000000000002.ids")));
  EXPECT_FALSE(fs::exists(dir.sub("CURRENT.tmp")));
}

TEST(HnswIndex, ACorruptSnapshotFailsOpenInsteadOfLosingVectors) {
  TempDir dir;
  std::mt19937_64 rng(9);
  {
    auto index = create_index(dir.path());
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(index->upsert("img_" + std::to_string(i), random_vector(rng, kDim)).ok());
    ASSERT_TRUE(index->checkpoint().ok());
  }
  const std::string graph = dir.sub("snapshot-00000000000000000001.hnsw");
  fs::resize_file(graph, fs::file_size(graph) - 1);
  auto index = HnswIndex::open(dir.path(), "tenant_t_m_vectors", small_options());
  ASSERT_FALSE(index.ok());
  EXPECT_EQ(index.error().code, ErrorCode::kInternal);
}

TEST(HnswIndex, RemovedSlotsAreReusedByNewIds) {
  TempDir dir;
  auto index = create_index(dir.path());
  std::mt19937_64 rng(10);
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 40; ++i) {
      ASSERT_TRUE(index->upsert("r" + std::to_string(round) + "_" + std::to_string(i), random_vector(rng, kDim)).ok());
    }
    for (int i = 0; i < 40; ++i) ASSERT_TRUE(index->remove("r" + std::to_string(round) + "_" + std::to_string(i)).ok());
  }
  const auto v = random_vector(rng, kDim);
  ASSERT_TRUE(index->upsert("last", v).ok());
  EXPECT_EQ(index->count(), 1u);
  auto hits = index->search(v, 5, -1.0f);
  ASSERT_EQ(hits->size(), 1u);
  EXPECT_EQ((*hits)[0].id, "last");
  ASSERT_TRUE(index->checkpoint().ok());
  auto ids_size = fs::file_size(dir.sub("snapshot-00000000000000000001.hnsw"));
  // 40 slots at most were ever needed (plus the header); 200 would mean no reuse.
  EXPECT_LT(ids_size, 100u * (kDim * 4 + 200));
}

TEST(HnswIndex, SearchesRunConcurrentlyWithUpsertsAndRemoves) {
  TempDir dir;
  HnswOptions options = small_options();
  options.exact_search_below = 100;  // cross from exact to HNSW while running
  options.insert_threads = 1;
  auto index = create_index(dir.path(), options);
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::atomic<long> searches{0};
  std::vector<std::thread> writers, readers;
  for (int w = 0; w < 2; ++w) {
    writers.emplace_back([&, w] {
      std::mt19937_64 rng(100 + w);
      for (int i = 0; i < 300; ++i) {
        const std::string id = "w" + std::to_string(w) + "_" + std::to_string(i);
        if (!index->upsert(id, random_vector(rng, kDim)).ok()) ++bad;
        if (i % 10 == 9 && !index->remove("w" + std::to_string(w) + "_" + std::to_string(i - 5)).ok()) ++bad;
      }
    });
  }
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      std::mt19937_64 rng(200 + r);
      while (!done.load()) {
        auto hits = index->search(random_vector(rng, kDim), 10, -1.0f);
        if (!hits.ok()) {
          ++bad;
          continue;
        }
        for (size_t i = 0; i < hits->size(); ++i) {
          if ((*hits)[i].id.empty() || (i > 0 && (*hits)[i - 1].score < (*hits)[i].score)) ++bad;
        }
        (void)index->get("w0_1");
        (void)index->count();
        ++searches;
      }
    });
  }
  for (auto& t : writers) t.join();
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(searches.load(), 0);
  EXPECT_EQ(index->count(), 2u * (300 - 30));
}

TEST(HnswIndex, CheckpointRunsConcurrentlyWithWritesWithoutLosingAny) {
  TempDir dir;
  HnswOptions options = small_options();
  options.insert_threads = 1;
  std::mt19937_64 rng(11);
  std::vector<std::vector<float>> vectors;
  for (int i = 0; i < 400; ++i) vectors.push_back(random_vector(rng, kDim));
  {
    auto index = create_index(dir.path(), options);
    std::atomic<bool> done{false};
    std::thread writer([&] {
      for (int i = 0; i < 400; ++i) EXPECT_TRUE(index->upsert("img_" + std::to_string(i), vectors[i]).ok());
      done = true;
    });
    int checkpoints = 0;
    while (!done.load()) {
      EXPECT_TRUE(index->checkpoint().ok());
      ++checkpoints;
    }
    writer.join();
    EXPECT_GT(checkpoints, 0);
  }
  auto index = reopen(dir.path(), options);
  ASSERT_EQ(index->count(), 400u);
  for (int i = 0; i < 400; i += 37) expect_vector_near(*index->get("img_" + std::to_string(i)), normalise(vectors[i]));
}

}  // namespace
}  // namespace deeplens
