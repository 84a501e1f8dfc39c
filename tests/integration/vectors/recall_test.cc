// Recall@10 of the embedded HNSW index against exact brute force on data shaped like CNN
// embeddings: cluster centres plus noise, L2-normalised, seeded; 100 vectors per cluster, so
// 1,000 centres at 100k x 1280-d in optimised builds (about 1.5 minutes on 2 cores). Sanitizer
// and unoptimised builds check the same property on 5k vectors (50 centres: with 1,000 the
// top-10 would mostly be near-ties between unrelated clusters, which says nothing about the
// index). DEEPLENS_RECALL_N overrides the size. bench/vector_recall measures the same
// thing with more detail (ef sweep, restart time).
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "vectors/hnsw/hnsw_store.h"

namespace deeplens {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

#if defined(__OPTIMIZE__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
constexpr size_t kDefaultN = 100'000;
#else
constexpr size_t kDefaultN = 5'000;
#endif
constexpr size_t kDim = 1280, kPerCluster = 100, kQueries = 200, kK = 10;
constexpr double kNoise = 0.6;

size_t vector_count() {
  const char* env = std::getenv("DEEPLENS_RECALL_N");
  return env ? std::strtoull(env, nullptr, 10) : kDefaultN;
}

void normalise(float* v) {
  double s = 0;
  for (size_t i = 0; i < kDim; ++i) s += double{v[i]} * v[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(s));
  for (size_t i = 0; i < kDim; ++i) v[i] *= inv;
}

float dot(const float* a, const float* b) {
  float s[8] = {};
  for (size_t i = 0; i < kDim; i += 8) {
    for (size_t j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
  }
  float total = 0;
  for (float x : s) total += x;
  return total;
}

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

TEST(VectorRecall, HnswRecallAt10IsAtLeast095AgainstExactSearch) {
  const size_t n = vector_count();
  const size_t clusters = std::max<size_t>(1, n / kPerCluster);
  std::mt19937_64 rng(42);
  std::normal_distribution<float> g(0, 1);
  std::vector<float> centres(clusters * kDim);
  for (size_t c = 0; c < clusters; ++c) {
    for (size_t i = 0; i < kDim; ++i) centres[c * kDim + i] = g(rng);
    normalise(&centres[c * kDim]);
  }
  std::uniform_int_distribution<size_t> pick(0, clusters - 1);
  const float scale = static_cast<float>(kNoise / std::sqrt(double(kDim)));
  auto fill = [&](float* out) {
    const float* c = &centres[pick(rng) * kDim];
    for (size_t i = 0; i < kDim; ++i) out[i] = c[i] + scale * g(rng);
    normalise(out);
  };
  std::vector<float> data(n * kDim), queries(kQueries * kDim);
  for (size_t i = 0; i < n; ++i) fill(&data[i * kDim]);
  for (size_t i = 0; i < kQueries; ++i) fill(&queries[i * kDim]);

  std::string root = (fs::temp_directory_path() / "deeplens-recall-XXXXXX").string();
  ASSERT_NE(::mkdtemp(root.data()), nullptr);
  HnswOptions options;  // the defaults are what is being tested
  options.exact_search_below = 0;
  auto store = HnswVectorStore::open(root, options);
  ASSERT_TRUE(store.ok()) << store.error().to_string();
  auto collection = (*store)->open_collection(collection_name("recall", "test"), kDim);
  ASSERT_TRUE(collection.ok());
  VectorIndex* index = *collection;

  auto t0 = Clock::now();
  std::vector<std::string> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = "img_" + std::to_string(i);
  for (size_t start = 0; start < n; start += 1000) {
    std::vector<VectorUpsert> batch;
    for (size_t i = start; i < std::min(n, start + 1000); ++i) batch.push_back({ids[i], {&data[i * kDim], kDim}});
    ASSERT_TRUE(index->upsert_batch(batch).ok());
  }
  const double build_ms = ms_since(t0);
  ASSERT_EQ(index->count(), n);

  // Exact top-10 of every query, on two threads.
  std::vector<std::vector<size_t>> truth(kQueries);
  auto exact = [&](size_t first, size_t last) {
    std::vector<std::pair<float, size_t>> scored(n);
    for (size_t q = first; q < last; ++q) {
      for (size_t i = 0; i < n; ++i) scored[i] = {-dot(&queries[q * kDim], &data[i * kDim]), i};
      std::partial_sort(scored.begin(), scored.begin() + kK, scored.end());
      for (size_t j = 0; j < kK; ++j) truth[q].push_back(scored[j].second);
    }
  };
  std::thread helper(exact, 0, kQueries / 2);
  exact(kQueries / 2, kQueries);
  helper.join();

  std::vector<double> latency_ms;
  size_t found = 0;
  for (int pass = 0; pass < 2; ++pass) {  // the first pass warms caches
    for (size_t q = 0; q < kQueries; ++q) {
      t0 = Clock::now();
      auto hits = index->search(std::span<const float>(&queries[q * kDim], kDim), kK, -1.0f);
      const double ms = ms_since(t0);
      ASSERT_TRUE(hits.ok());
      if (pass == 0) continue;
      latency_ms.push_back(ms);
      for (const auto& h : *hits) {
        for (size_t t : truth[q]) found += h.id == ids[t];
      }
    }
  }
  std::sort(latency_ms.begin(), latency_ms.end());
  const double recall = double(found) / (kQueries * kK);
  std::printf("recall@10 = %.4f over %zu queries; %zu x %zu-d (%zu clusters) built in %.1f s (%.0f vectors/s); "
              "query p50 = %.3f ms, p99 = %.3f ms (M=%zu, ef_construction=%zu, ef_search=%zu)\n",
              recall, kQueries, n, kDim, clusters, build_ms / 1000, n / (build_ms / 1000), latency_ms[kQueries / 2],
              latency_ms[kQueries * 99 / 100 - 1], options.m, options.ef_construction, options.ef_search);
  EXPECT_GE(recall, 0.95);
  store->reset();
  fs::remove_all(root);
}

}  // namespace
}  // namespace deeplens
