// vector_recall: recall, build time and query latency of the embedded HNSW vector index on
// synthetic data shaped like CNN embeddings (cluster centres plus noise, L2-normalised, seeded),
// measured through the public HnswVectorStore / HnswIndex API (write-ahead log and fsync on).
//
//   vector_recall                      100k x 1280-d, 1000 clusters, 200 queries, recall@10,
//                                      ef_search sweep, restart time
//   vector_recall --n 20000 --ef-search 32,64,128
//   vector_recall --crossover          exact vs HNSW latency by collection size (picks
//                                      HnswOptions::exact_search_below)
//   vector_recall --upserts            single-upsert throughput with group commit, by writer count
// Run it on an idle machine (it uses --threads cores); see bench/README.md for recorded results.
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/log.h"
#include "vectors/hnsw/hnsw_index.h"
#include "vectors/hnsw/hnsw_store.h"

namespace deeplens {
namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  size_t n = 100000;
  size_t dim = 1280;
  size_t clusters = 0;  // 0: one per 100 vectors (1,000 at 100k), as in the recall test
  double noise = 0.6;  // norm of the noise added to a unit centre before normalising
  size_t queries = 200;
  size_t k = 10;
  size_t ef_construction = HnswOptions{}.ef_construction;
  std::vector<size_t> ef_search = {32, 64, 128};
  size_t threads = 2;
  size_t batch = 1000;
  size_t tail = 2000;  // vectors upserted after the checkpoint, replayed from the log on restart
  bool sync = true;
  bool crossover = false;
  bool upserts = false;
  uint64_t seed = 42;
  std::string dir;
};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::vector<size_t> parse_list(const char* s) {
  std::vector<size_t> out;
  for (const char* p = s; *p;) {
    out.push_back(std::strtoull(p, const_cast<char**>(&p), 10));
    if (*p == ',') ++p;
  }
  return out;
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", f.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (f == "--n") a.n = std::strtoull(next(), nullptr, 10);
    else if (f == "--dim") a.dim = std::strtoull(next(), nullptr, 10);
    else if (f == "--clusters") a.clusters = std::strtoull(next(), nullptr, 10);
    else if (f == "--noise") a.noise = std::strtod(next(), nullptr);
    else if (f == "--queries") a.queries = std::strtoull(next(), nullptr, 10);
    else if (f == "--k") a.k = std::strtoull(next(), nullptr, 10);
    else if (f == "--ef-construction") a.ef_construction = std::strtoull(next(), nullptr, 10);
    else if (f == "--ef-search") a.ef_search = parse_list(next());
    else if (f == "--threads") a.threads = std::strtoull(next(), nullptr, 10);
    else if (f == "--batch") a.batch = std::strtoull(next(), nullptr, 10);
    else if (f == "--tail") a.tail = std::strtoull(next(), nullptr, 10);
    else if (f == "--seed") a.seed = std::strtoull(next(), nullptr, 10);
    else if (f == "--dir") a.dir = next();
    else if (f == "--no-sync") a.sync = false;
    else if (f == "--crossover") a.crossover = true;
    else if (f == "--upserts") a.upserts = true;
    else {
      const bool help = f == "--help" || f == "-h";
      std::fprintf(help ? stdout : stderr,
                   "usage: vector_recall [--n N] [--dim D] [--clusters C] [--noise X] [--queries Q] [--k K]\n"
                   "       [--ef-construction E] [--ef-search a,b,c] [--threads T] [--batch B] [--tail T]\n"
                   "       [--seed S] [--dir DIR] [--no-sync] [--crossover] [--upserts]\n");
      std::exit(help ? 0 : 2);
    }
  }
  if (a.clusters == 0) a.clusters = std::max<size_t>(1, a.n / 100);
  return a;
}

// Unit cluster centres; a point is normalise(centre + noise * g / sqrt(dim)), g ~ N(0, I).
class EmbeddingLike {
 public:
  EmbeddingLike(size_t dim, size_t clusters, double noise, uint64_t seed)
      : dim_(dim), noise_(noise), rng_(seed), centres_(clusters * dim) {
    std::normal_distribution<float> g(0, 1);
    for (size_t c = 0; c < clusters; ++c) {
      for (size_t i = 0; i < dim; ++i) centres_[c * dim + i] = g(rng_);
      normalise(&centres_[c * dim]);
    }
  }
  void fill(float* out) {
    std::uniform_int_distribution<size_t> pick(0, centres_.size() / dim_ - 1);
    std::normal_distribution<float> g(0, 1);
    const float* c = &centres_[pick(rng_) * dim_];
    const float scale = static_cast<float>(noise_ / std::sqrt(double(dim_)));
    for (size_t i = 0; i < dim_; ++i) out[i] = c[i] + scale * g(rng_);
    normalise(out);
  }

 private:
  void normalise(float* v) const {
    double s = 0;
    for (size_t i = 0; i < dim_; ++i) s += double{v[i]} * v[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(s));
    for (size_t i = 0; i < dim_; ++i) v[i] *= inv;
  }
  size_t dim_;
  double noise_;
  std::mt19937_64 rng_;
  std::vector<float> centres_;
};

float dot(const float* a, const float* b, size_t dim) {
  float s[8] = {};
  size_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    for (size_t j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
  }
  float total = 0;
  for (; i < dim; ++i) total += a[i] * b[i];
  for (float x : s) total += x;
  return total;
}

// Exact top-k ids (as indexes into data) of every query, on `threads` threads.
std::vector<std::vector<size_t>> exact_top_k(const std::vector<float>& data, const std::vector<float>& queries,
                                             size_t dim, size_t k, size_t threads) {
  const size_t n = data.size() / dim, q = queries.size() / dim;
  std::vector<std::vector<size_t>> out(q);
  auto work = [&](size_t first, size_t last) {
    std::vector<std::pair<float, size_t>> scored(n);
    for (size_t qi = first; qi < last; ++qi) {
      for (size_t i = 0; i < n; ++i) scored[i] = {-dot(&queries[qi * dim], &data[i * dim], dim), i};
      std::partial_sort(scored.begin(), scored.begin() + static_cast<long>(k), scored.end());
      for (size_t j = 0; j < k; ++j) out[qi].push_back(scored[j].second);
    }
  };
  std::vector<std::thread> pool;
  const size_t per = (q + threads - 1) / threads;
  for (size_t t = 0; t < threads; ++t) pool.emplace_back(work, std::min(q, t * per), std::min(q, (t + 1) * per));
  for (auto& t : pool) t.join();
  return out;
}

struct Latency {
  double p50_ms = 0, p99_ms = 0, mean_ms = 0;
};

Latency summarise(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  Latency l;
  l.p50_ms = ms[ms.size() / 2];
  l.p99_ms = ms[std::min(ms.size() - 1, static_cast<size_t>(std::ceil(ms.size() * 0.99)) - 1)];
  double sum = 0;
  for (double x : ms) sum += x;
  l.mean_ms = sum / ms.size();
  return l;
}

std::string id_of(size_t i) { return "img_" + std::to_string(i); }

// Runs every query (twice: a warm-up pass, then the timed pass) and returns latency and recall.
std::pair<Latency, double> measure(VectorIndex& index, const std::vector<float>& queries, size_t dim, size_t k,
                                   const std::vector<std::vector<size_t>>* truth) {
  const size_t q = queries.size() / dim;
  std::vector<double> ms;
  size_t found = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t qi = 0; qi < q; ++qi) {
      const auto t0 = Clock::now();
      auto hits = index.search(std::span<const float>(&queries[qi * dim], dim), k, -1.0f);
      const double elapsed = seconds_since(t0) * 1000;
      if (!hits.ok()) {
        std::fprintf(stderr, "search failed: %s\n", hits.error().to_string().c_str());
        std::exit(1);
      }
      if (pass == 0) continue;
      ms.push_back(elapsed);
      if (truth) {
        for (const auto& h : *hits) {
          for (size_t t : (*truth)[qi]) found += h.id == id_of(t);
        }
      }
    }
  }
  return {summarise(ms), truth ? double(found) / double(q * k) : 0.0};
}

std::string make_dir(const Args& a, const char* what) {
  if (!a.dir.empty()) return a.dir + "/" + what;
  std::string pattern = (std::filesystem::temp_directory_path() / "deeplens-bench-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    std::perror("mkdtemp");
    std::exit(1);
  }
  return pattern;
}

HnswOptions options_from(const Args& a) {
  HnswOptions o;
  o.ef_construction = a.ef_construction;
  o.insert_threads = a.threads;
  o.sync_writes = a.sync;
  o.initial_capacity = 1024;
  return o;
}

Status insert_range(VectorIndex& index, const std::vector<float>& data, size_t dim, size_t first, size_t last,
                    size_t batch, size_t id_offset) {
  std::vector<std::string> ids;
  std::vector<VectorUpsert> items;
  for (size_t start = first; start < last; start += batch) {
    const size_t end = std::min(last, start + batch);
    ids.clear();
    items.clear();
    for (size_t i = start; i < end; ++i) ids.push_back(id_of(id_offset + i));
    for (size_t i = start; i < end; ++i) {
      items.push_back({ids[i - start], std::span<const float>(&data[i * dim], dim)});
    }
    if (Status s = index.upsert_batch(items); !s.ok()) return s;
  }
  return ok_status();
}

int run_recall(const Args& a) {
  std::printf("data: n=%zu dim=%zu clusters=%zu noise=%.2f queries=%zu k=%zu seed=%llu\n", a.n, a.dim, a.clusters,
              a.noise, a.queries, a.k, static_cast<unsigned long long>(a.seed));
  std::printf("index: M=%zu ef_construction=%zu insert_threads=%zu batch=%zu fsync=%s\n", HnswOptions{}.m,
              a.ef_construction, a.threads, a.batch, a.sync ? "on" : "off");
  EmbeddingLike gen(a.dim, a.clusters, a.noise, a.seed);
  std::vector<float> data((a.n + a.tail) * a.dim), queries(a.queries * a.dim);
  for (size_t i = 0; i < a.n + a.tail; ++i) gen.fill(&data[i * a.dim]);
  for (size_t i = 0; i < a.queries; ++i) gen.fill(&queries[i * a.dim]);

  const std::string root = make_dir(a, "recall");
  HnswOptions options = options_from(a);
  auto store = HnswVectorStore::open(root, options);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.error().to_string().c_str());
    return 1;
  }
  const std::string name = collection_name("bench", "recall");
  auto* index = *(*store)->open_collection(name, a.dim);

  auto t0 = Clock::now();
  if (Status s = insert_range(*index, data, a.dim, 0, a.n, a.batch, 0); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.error().to_string().c_str());
    return 1;
  }
  const double build_s = seconds_since(t0);
  std::printf("build: %zu vectors in %.1f s = %.0f vectors/s (upsert_batch of %zu, one log write%s per batch)\n",
              a.n, build_s, a.n / build_s, a.batch, a.sync ? " + fsync" : "");

  t0 = Clock::now();
  // Ground truth over the first n vectors only (the tail is inserted later).
  std::vector<float> indexed(data.begin(), data.begin() + static_cast<long>(a.n * a.dim));
  const auto truth = exact_top_k(indexed, queries, a.dim, a.k, a.threads);
  indexed = {};
  std::printf("exact ground truth: %.1f s (%zu queries, %zu threads)\n", seconds_since(t0), a.queries, a.threads);

  auto* hnsw_index = static_cast<HnswIndex*>(index);
  std::printf("%-10s %-10s %-10s %-10s %-10s\n", "ef_search", "recall@k", "p50_ms", "p99_ms", "mean_ms");
  for (size_t ef : a.ef_search) {
    hnsw_index->tune_search(ef, 0);
    auto [lat, recall] = measure(*index, queries, a.dim, a.k, &truth);
    std::printf("%-10zu %-10.4f %-10.3f %-10.3f %-10.3f\n", ef, recall, lat.p50_ms, lat.p99_ms, lat.mean_ms);
  }
  hnsw_index->tune_search(options.ef_search, a.n + 1);
  {
    std::vector<float> few(queries.begin(), queries.begin() + static_cast<long>(std::min<size_t>(20, a.queries) * a.dim));
    auto [lat, recall] = measure(*index, few, a.dim, a.k, &truth);
    std::printf("exact search through the index: recall@k=%.4f p50=%.2f ms p99=%.2f ms (20 queries)\n", recall,
                lat.p50_ms, lat.p99_ms);
  }
  hnsw_index->tune_search(options.ef_search, options.exact_search_below);

  t0 = Clock::now();
  if (Status s = hnsw_index->checkpoint(); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.error().to_string().c_str());
    return 1;
  }
  std::printf("checkpoint of %zu vectors: %.2f s\n", a.n, seconds_since(t0));
  if (Status s = insert_range(*index, data, a.dim, a.n, a.n + a.tail, a.batch, 0); !s.ok()) return 1;
  store->reset();

  t0 = Clock::now();
  store = HnswVectorStore::open(root, options);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.error().to_string().c_str());
    return 1;
  }
  const double reopen_s = seconds_since(t0);
  auto* reopened = static_cast<HnswIndex*>((*store)->find_collection(name));
  const auto& report = reopened->open_report();
  std::printf("restart: %.2f s (snapshot of %zu vectors loaded in %.0f ms, %llu log records replayed in %.0f ms)\n",
              reopen_s, report.snapshot_vectors, report.load_ms,
              static_cast<unsigned long long>(report.records_replayed), report.replay_ms);
  {
    auto [lat, recall] = measure(*reopened, queries, a.dim, a.k, nullptr);
    std::printf("after restart (%zu vectors, ef_search=%zu): p50=%.3f ms p99=%.3f ms\n", reopened->count(),
                options.ef_search, lat.p50_ms, lat.p99_ms);
    (void)recall;
  }
  store->reset();
  if (a.dir.empty()) std::filesystem::remove_all(root);
  return 0;
}

int run_crossover(const Args& a) {
  std::printf("exact vs HNSW search latency, dim=%zu, k=%zu, ef_search=%zu\n", a.dim, a.k, HnswOptions{}.ef_search);
  std::printf("%-8s %-13s %-13s %-13s %-13s\n", "n", "exact_p50_ms", "exact_p99_ms", "hnsw_p50_ms", "hnsw_p99_ms");
  const std::vector<size_t> sizes = {500, 1000, 2000, 4000, 8000, 16000};
  EmbeddingLike gen(a.dim, a.clusters, a.noise, a.seed);
  std::vector<float> data(sizes.back() * a.dim), queries(a.queries * a.dim);
  for (size_t i = 0; i < sizes.back(); ++i) gen.fill(&data[i * a.dim]);
  for (size_t i = 0; i < a.queries; ++i) gen.fill(&queries[i * a.dim]);
  const std::string root = make_dir(a, "crossover");
  HnswOptions options = options_from(a);
  options.sync_writes = false;
  auto store = HnswVectorStore::open(root, options);
  if (!store.ok()) return 1;
  auto* index = static_cast<HnswIndex*>(*(*store)->open_collection("tenant_bench_crossover_vectors", a.dim));
  size_t have = 0;
  for (size_t n : sizes) {
    if (!insert_range(*index, data, a.dim, have, n, a.batch, 0).ok()) return 1;
    have = n;
    index->tune_search(options.ef_search, n + 1);
    auto exact = measure(*index, queries, a.dim, a.k, nullptr).first;
    index->tune_search(options.ef_search, 0);
    auto graph = measure(*index, queries, a.dim, a.k, nullptr).first;
    std::printf("%-8zu %-13.3f %-13.3f %-13.3f %-13.3f\n", n, exact.p50_ms, exact.p99_ms, graph.p50_ms, graph.p99_ms);
  }
  store->reset();
  if (a.dir.empty()) std::filesystem::remove_all(root);
  return 0;
}

int run_upserts(const Args& a) {
  std::printf("upsert throughput, dim=%zu, fsync=%s: single upsert() calls from W writer threads "
              "(group commit), vs upsert_batch\n", a.dim, a.sync ? "on" : "off");
  std::printf("%-28s %-10s %-12s\n", "mode", "vectors", "vectors/s");
  constexpr size_t kPerRun = 3000;
  EmbeddingLike gen(a.dim, a.clusters, a.noise, a.seed);
  std::vector<float> data(kPerRun * a.dim);
  for (size_t i = 0; i < kPerRun; ++i) gen.fill(&data[i * a.dim]);
  const std::string root = make_dir(a, "upserts");
  auto store = HnswVectorStore::open(root, options_from(a));
  if (!store.ok()) return 1;
  int run = 0;
  for (size_t writers : {1, 4, 16, 0}) {
    auto* index = *(*store)->open_collection("tenant_bench_upserts" + std::to_string(run++) + "_vectors", a.dim);
    const auto t0 = Clock::now();
    if (writers == 0) {
      if (!insert_range(*index, data, a.dim, 0, kPerRun, a.batch, 0).ok()) return 1;
    } else {
      std::vector<std::thread> pool;
      for (size_t w = 0; w < writers; ++w) {
        pool.emplace_back([&, w] {
          for (size_t i = w; i < kPerRun; i += writers) {
            if (!index->upsert(id_of(i), std::span<const float>(&data[i * a.dim], a.dim)).ok()) std::abort();
          }
        });
      }
      for (auto& t : pool) t.join();
    }
    const double s = seconds_since(t0);
    const std::string mode = writers == 0 ? "upsert_batch(" + std::to_string(a.batch) + ")"
                                          : std::to_string(writers) + " writer threads";
    std::printf("%-28s %-10zu %-12.0f\n", mode.c_str(), kPerRun, kPerRun / s);
  }
  store->reset();
  if (a.dir.empty()) std::filesystem::remove_all(root);
  return 0;
}

}  // namespace
}  // namespace deeplens

int main(int argc, char** argv) {
  using namespace deeplens;
  init_logging(LogOptions{LogLevel::kWarn, true});
  const Args args = parse_args(argc, argv);
  if (args.crossover) return run_crossover(args);
  if (args.upserts) return run_upserts(args);
  return run_recall(args);
}
