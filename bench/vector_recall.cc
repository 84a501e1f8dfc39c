// vector_recall: recall, build time and query latency of the embedded HNSW vector index on
// synthetic data shaped like CNN embeddings (cluster centres plus noise, L2-normalised, seeded),
// measured through the public HnswVectorStore / HnswIndex API (write-ahead log and fsync on), side
// by side with hnswlib called directly on the same data, queries and parameters (what our ids,
// locks and log cost), plus memory (VmRSS) per vector and the operating point.
//
//   vector_recall                      100k x 1280-d, 1000 clusters, 200 queries, recall@10,
//                                      ef_search sweep (ours vs hnswlib: recall, p50/p99, QPS on
//                                      1 and --threads threads), memory, restart time
//   vector_recall --n 1000000          peak RSS ~16 GB: the data once plus both indexes
//   vector_recall --no-hnswlib         our index only
//   vector_recall --n 20000 --ef-search 32,64,128
//   vector_recall --crossover          exact vs HNSW latency by collection size (picks
//                                      HnswOptions::exact_search_below)
//   vector_recall --upserts            single-upsert throughput with group commit, by writer count
// Run it on an idle machine (it uses --threads cores); see bench/README.md for recorded results.
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

// hnswlib.h defines non-inline functions and global function pointers (below) that
// src/vectors/hnsw/hnsw_graph.cc, linked in through deeplens_vectors, defines too; they are renamed
// here so the two definitions do not clash at link time. Warnings silenced as in hnsw_graph.cc.
#include <cpuid.h>
#include <immintrin.h>
#include <x86intrin.h>
#define cpuid vector_recall_cpuid
#define xgetbv vector_recall_xgetbv
#define AVXCapable vector_recall_AVXCapable
#define AVX512Capable vector_recall_AVX512Capable
#define InnerProductSIMD16Ext vector_recall_InnerProductSIMD16Ext
#define InnerProductSIMD4Ext vector_recall_InnerProductSIMD4Ext
#define InnerProductDistanceSIMD16Ext vector_recall_InnerProductDistanceSIMD16Ext
#define InnerProductDistanceSIMD4Ext vector_recall_InnerProductDistanceSIMD4Ext
#define L2SqrSIMD16Ext vector_recall_L2SqrSIMD16Ext
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-variable"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <hnswlib/hnswlib.h>
#pragma GCC diagnostic pop
#undef cpuid
#undef xgetbv
#undef AVXCapable
#undef AVX512Capable
#undef InnerProductSIMD16Ext
#undef InnerProductSIMD4Ext
#undef InnerProductDistanceSIMD16Ext
#undef InnerProductDistanceSIMD4Ext
#undef L2SqrSIMD16Ext

#include "common/log.h"
#include "vectors/hnsw/hnsw_graph.h"
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
  std::vector<size_t> ef_search = {16, 24, 32, 48, 64, 96, 128};
  size_t threads = 2;
  size_t batch = 1000;
  size_t tail = 2000;  // vectors upserted after the checkpoint, replayed from the log on restart
  bool sync = true;
  bool crossover = false;
  bool upserts = false;
  bool hnswlib = true;  // also build and measure hnswlib called directly
  double target_recall = 0.95;  // the operating point: the smallest ef_search reaching this
  size_t qps_queries = 3000;  // searches per QPS figure (the query set, repeated)
  size_t rounds = 5;  // timed passes over the query set per latency figure (1,000 samples at 200)
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
    else if (f == "--no-hnswlib") a.hnswlib = false;
    else if (f == "--target-recall") a.target_recall = std::strtod(next(), nullptr);
    else if (f == "--qps-queries") a.qps_queries = std::strtoull(next(), nullptr, 10);
    else if (f == "--rounds") a.rounds = std::max<size_t>(1, std::strtoull(next(), nullptr, 10));
    else {
      const bool help = f == "--help" || f == "-h";
      std::fprintf(help ? stdout : stderr,
                   "usage: vector_recall [--n N] [--dim D] [--clusters C] [--noise X] [--queries Q] [--k K]\n"
                   "       [--ef-construction E] [--ef-search a,b,c] [--threads T] [--batch B] [--tail T]\n"
                   "       [--seed S] [--dir DIR] [--no-sync] [--crossover] [--upserts]\n"
                   "       [--no-hnswlib] [--target-recall R] [--qps-queries Q] [--rounds R]\n");
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

// The exact top-k of each query, as indexes into the data.
using Truth = std::vector<std::vector<size_t>>;

// Exact top-k of every query over the first n vectors of data (no copy), on `threads` threads.
Truth exact_top_k(const std::vector<float>& data, size_t n, const std::vector<float>& queries, size_t dim, size_t k,
                  size_t threads) {
  const size_t q = queries.size() / dim;
  Truth out(q);
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

constexpr char kIdPrefix[] = "img_";
std::string id_of(size_t i) { return kIdPrefix + std::to_string(i); }

// One implementation under test: runs query qi and, when ids is not null, appends the hits (best
// first) as indexes into the data. Timed passes pass null, so only the search itself is timed.
using SearchFn = std::function<void(size_t qi, std::vector<size_t>* ids)>;

SearchFn search_ours(const VectorIndex& index, const std::vector<float>& queries, size_t dim, size_t k) {
  return [&index, &queries, dim, k](size_t qi, std::vector<size_t>* ids) {
    auto hits = index.search(std::span<const float>(&queries[qi * dim], dim), k, -1.0f);
    if (!hits.ok()) {
      std::fprintf(stderr, "search failed: %s\n", hits.error().to_string().c_str());
      std::exit(1);
    }
    if (ids == nullptr) return;
    for (const auto& h : *hits) ids->push_back(std::strtoull(h.id.c_str() + sizeof kIdPrefix - 1, nullptr, 10));
  };
}

// Runs queries 0..q-1 once (a warm-up) and returns recall@k against truth.
double recall_of(const SearchFn& search, size_t q, size_t k, const Truth& truth) {
  size_t found = 0;
  std::vector<size_t> ids;
  for (size_t qi = 0; qi < q; ++qi) {
    ids.clear();
    search(qi, &ids);
    for (size_t id : ids) found += std::count(truth[qi].begin(), truth[qi].end(), id);
  }
  return double(found) / double(q * k);
}

// Times queries 0..q-1 one at a time, appending milliseconds per query to ms.
void time_queries(const SearchFn& search, size_t q, std::vector<double>* ms) {
  for (size_t qi = 0; qi < q; ++qi) {
    const auto t0 = Clock::now();
    search(qi, nullptr);
    ms->push_back(seconds_since(t0) * 1000);
  }
}

// Seconds taken by `total` searches (the q queries, repeated) spread over `threads` threads.
double seconds_for(const SearchFn& search, size_t q, size_t total, size_t threads) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next.fetch_add(1); i < total; i = next.fetch_add(1)) search(i % q, nullptr);
  };
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  return seconds_since(t0);
}

// A warm-up pass (counting recall@k when truth is given), then one timed pass.
std::pair<Latency, double> measure(const SearchFn& search, size_t q, size_t k, const Truth* truth) {
  double recall = 0;
  if (truth) {
    recall = recall_of(search, q, k, *truth);
  } else {
    for (size_t qi = 0; qi < q; ++qi) search(qi, nullptr);
  }
  std::vector<double> ms;
  time_queries(search, q, &ms);
  return {summarise(ms), recall};
}

// Everything the sweep reports for one implementation at one ef_search.
struct Figures {
  double recall = 0;
  Latency latency;
  double qps_1 = 0;  // one query thread
  double qps_n = 0;  // --threads query threads
};

// Measures the implementations alternately, round by round, so that other load on the machine
// falls on each alike: recall (also the warm-up), latency over --rounds passes of the queries one
// at a time, then QPS over --qps-queries searches each on 1 and on --threads threads.
std::vector<Figures> measure_side_by_side(const std::vector<SearchFn>& impls, const Args& a, const Truth& truth) {
  std::vector<Figures> out(impls.size());
  std::vector<std::vector<double>> ms(impls.size());
  for (size_t i = 0; i < impls.size(); ++i) out[i].recall = recall_of(impls[i], a.queries, a.k, truth);
  for (size_t round = 0; round < a.rounds; ++round) {
    for (size_t i = 0; i < impls.size(); ++i) time_queries(impls[i], a.queries, &ms[i]);
  }
  const size_t per_round = std::max<size_t>(1, a.qps_queries / a.rounds);
  std::vector<double> s1(impls.size()), sn(impls.size());
  for (size_t round = 0; round < a.rounds; ++round) {
    for (size_t i = 0; i < impls.size(); ++i) s1[i] += seconds_for(impls[i], a.queries, per_round, 1);
    for (size_t i = 0; i < impls.size(); ++i) sn[i] += seconds_for(impls[i], a.queries, per_round, a.threads);
  }
  for (size_t i = 0; i < impls.size(); ++i) {
    out[i].latency = summarise(ms[i]);
    out[i].qps_1 = double(per_round * a.rounds) / s1[i];
    out[i].qps_n = double(per_round * a.rounds) / sn[i];
  }
  return out;
}

// hnswlib called directly, as a reference for what our index adds on top of it. Built with the
// same M, ef_construction, seed and distance kernel as ours, sized for exactly n vectors.
struct DirectHnsw {
  DirectHnsw(size_t dim, size_t n, size_t m, size_t ef_construction, uint64_t seed)
      : space(dim), index(&space, n, m, ef_construction, seed), stock_distance(index.fstdistfunc_) {}
  hnswlib::InnerProductSpace space;
  hnswlib::HierarchicalNSW<float> index;
  const hnswlib::DISTFUNC<float> stock_distance;  // hnswlib's own kernel (SSE without -mavx)
};

bool cpu_has_avx2() { return hnsw::fastest_inner_product_distance() != nullptr; }

// Our kernel when the CPU has it, else hnswlib's (which is then what ours uses too).
void use_our_kernel(DirectHnsw& d) {
  d.index.fstdistfunc_ = cpu_has_avx2() ? hnsw::fastest_inner_product_distance() : d.stock_distance;
}

// Inserts the first n vectors of data from `threads` threads calling addPoint (as hnswlib's
// Python binding does); returns the seconds taken.
double build_direct(DirectHnsw& d, const std::vector<float>& data, size_t dim, size_t n, size_t threads) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) d.index.addPoint(&data[i * dim], i);
  };
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  return seconds_since(t0);
}

// hnswlib's own per-element arrays: the level-0 block (links, vector, label), upper-layer links,
// the per-element lock, level and upper-layer pointer (its label hash map is not counted).
double direct_bytes(const DirectHnsw& d) {
  const auto& h = d.index;
  double bytes = double(h.max_elements_) * (h.size_data_per_element_ + sizeof(std::mutex) + sizeof(int) + sizeof(void*));
  for (size_t i = 0; i < h.cur_element_count; ++i) {
    if (h.element_levels_[i] > 0) bytes += double(h.size_links_per_element_) * h.element_levels_[i];
  }
  return bytes;
}

SearchFn search_direct(const DirectHnsw& d, const std::vector<float>& queries, size_t dim, size_t k) {
  return [&d, &queries, dim, k](size_t qi, std::vector<size_t>* ids) {
    auto top = d.index.searchKnn(&queries[qi * dim], k);  // furthest first
    if (ids == nullptr) return;
    const size_t first = ids->size();
    for (; !top.empty(); top.pop()) ids->push_back(top.top().second);
    std::reverse(ids->begin() + static_cast<long>(first), ids->end());
  };
}

// Resident and peak resident memory of this process, in bytes (/proc/self/status).
struct Rss {
  double rss = 0, peak = 0;
};

Rss read_rss() {
  Rss r;
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) r.rss = std::strtod(line.c_str() + 6, nullptr) * 1024;
    if (line.rfind("VmHWM:", 0) == 0) r.peak = std::strtod(line.c_str() + 6, nullptr) * 1024;
  }
  return r;
}

constexpr double kMB = 1e6;

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

void print_figures(size_t ef, const char* impl, const Figures& f) {
  std::printf("%-10zu %-14s %-9.4f %-8.3f %-8.3f %-8.3f %-9.0f %-9.0f\n", ef, impl, f.recall, f.latency.p50_ms,
              f.latency.p99_ms, f.latency.mean_ms, f.qps_1, f.qps_n);
}

// ours/hnswlib for every column: above 1 is slower for latencies, below 1 is slower for QPS.
void print_ratio(size_t ef, const Figures& ours, const Figures& ref) {
  std::printf("%-10zu %-14s %-9.3f %-8.2f %-8.2f %-8.2f %-9.2f %-9.2f\n", ef, "ours/hnswlib", ours.recall / ref.recall,
              ours.latency.p50_ms / ref.latency.p50_ms, ours.latency.p99_ms / ref.latency.p99_ms,
              ours.latency.mean_ms / ref.latency.mean_ms, ours.qps_1 / ref.qps_1, ours.qps_n / ref.qps_n);
}

// The smallest ef_search of the sweep whose recall reaches the target, if any.
std::optional<size_t> operating_point(const std::vector<size_t>& efs, const std::vector<Figures>& rows, double target) {
  std::optional<size_t> best;
  for (size_t i = 0; i < efs.size(); ++i) {
    if (rows[i].recall >= target && (!best || efs[i] < efs[*best])) best = i;
  }
  return best;
}

void print_operating_point(const char* impl, const Args& a, const std::vector<Figures>& rows, std::optional<size_t> i) {
  if (!i) {
    std::printf("  %-8s no ef_search in the sweep reaches recall@k %.2f\n", impl, a.target_recall);
    return;
  }
  const Figures& f = rows[*i];
  std::printf("  %-8s ef_search=%zu recall@k=%.4f p50=%.3f ms p99=%.3f ms qps_1t=%.0f qps_%zut=%.0f\n", impl,
              a.ef_search[*i], f.recall, f.latency.p50_ms, f.latency.p99_ms, f.qps_1, a.threads, f.qps_n);
}

int run_recall(const Args& a) {
  std::printf("data: n=%zu dim=%zu clusters=%zu noise=%.2f queries=%zu k=%zu seed=%llu\n", a.n, a.dim, a.clusters,
              a.noise, a.queries, a.k, static_cast<unsigned long long>(a.seed));
  std::printf("index: M=%zu ef_construction=%zu insert_threads=%zu batch=%zu fsync=%s\n", HnswOptions{}.m,
              a.ef_construction, a.threads, a.batch, a.sync ? "on" : "off");
  EmbeddingLike gen(a.dim, a.clusters, a.noise, a.seed);
  // The only copy of the raw vectors (n to build from, then the tail); freed before the restart.
  std::vector<float> data((a.n + a.tail) * a.dim), queries(a.queries * a.dim);
  for (size_t i = 0; i < a.n + a.tail; ++i) gen.fill(&data[i * a.dim]);
  for (size_t i = 0; i < a.queries; ++i) gen.fill(&queries[i * a.dim]);

  auto t0 = Clock::now();
  // Ground truth over the first n vectors only (the tail is inserted later).
  const auto truth = exact_top_k(data, a.n, queries, a.dim, a.k, a.threads);
  std::printf("exact ground truth: %.1f s (%zu queries, %zu threads)\n", seconds_since(t0), a.queries, a.threads);

  const Rss before = read_rss();
  const std::string root = make_dir(a, "recall");
  HnswOptions options = options_from(a);
  auto store = HnswVectorStore::open(root, options);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.error().to_string().c_str());
    return 1;
  }
  const std::string name = collection_name("bench", "recall");
  auto* index = *(*store)->open_collection(name, a.dim);

  t0 = Clock::now();
  if (Status s = insert_range(*index, data, a.dim, 0, a.n, a.batch, 0); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.error().to_string().c_str());
    return 1;
  }
  const double build_s = seconds_since(t0);
  const Rss after_ours = read_rss();
  std::printf("build: %zu vectors in %.1f s = %.0f vectors/s (upsert_batch of %zu, one log write%s per batch)\n",
              a.n, build_s, a.n / build_s, a.batch, a.sync ? " + fsync" : "");

  std::unique_ptr<DirectHnsw> direct;
  Rss after_direct;
  if (a.hnswlib) {
    direct = std::make_unique<DirectHnsw>(a.dim, a.n, options.m, a.ef_construction, options.random_seed);
    use_our_kernel(*direct);
    const double direct_s = build_direct(*direct, data, a.dim, a.n, a.threads);
    after_direct = read_rss();
    std::printf("hnswlib direct build: %zu vectors in %.1f s = %.0f vectors/s (addPoint from %zu threads, no log); "
                "ours/hnswlib vectors/s = %.2f\n",
                a.n, direct_s, a.n / direct_s, a.threads, direct_s / build_s);
  }

  const double per_vector = double(a.dim * sizeof(float));
  std::printf("memory (VmRSS): %.0f MB before building (data %.0f MB)\n", before.rss / kMB,
              double(data.size() * sizeof(float)) / kMB);
  std::printf("  our index:      +%.0f MB = %.0f bytes/vector (the vector itself: %.0f)\n",
              (after_ours.rss - before.rss) / kMB, (after_ours.rss - before.rss) / a.n, per_vector);
  if (direct) {
    std::printf("  hnswlib direct: +%.0f MB = %.0f bytes/vector (its arrays: %.0f bytes/vector)\n",
                (after_direct.rss - after_ours.rss) / kMB, (after_direct.rss - after_ours.rss) / a.n,
                direct_bytes(*direct) / a.n);
  }
  std::printf("  peak so far (VmHWM): %.0f MB\n", read_rss().peak / kMB);

  const bool two_kernels = direct && cpu_has_avx2();
  std::printf("search: %zu queries, k=%zu; latency one query at a time over %zu passes; QPS over %zu searches on 1 "
              "and %zu threads%s\n",
              a.queries, a.k, a.rounds, a.qps_queries, a.threads,
              direct ? "; ours and hnswlib measured alternately, pass by pass" : "");
  if (direct) {
    std::printf("  hnswlib = hnswlib::HierarchicalNSW::searchKnn on the direct index with our distance kernel (%s)%s\n",
                cpu_has_avx2() ? "AVX2+FMA" : "hnswlib's own",
                two_kernels ? "; hnswlib-stock = the same with hnswlib's own SSE kernel" : "");
  }
  std::printf("%-10s %-14s %-9s %-8s %-8s %-8s %-9s %-9s\n", "ef_search", "impl", "recall@k", "p50_ms", "p99_ms",
              "mean_ms", "qps_1t", ("qps_" + std::to_string(a.threads) + "t").c_str());
  auto* hnsw_index = static_cast<HnswIndex*>(index);
  const SearchFn ours = search_ours(*index, queries, a.dim, a.k);
  const SearchFn reference = direct ? search_direct(*direct, queries, a.dim, a.k) : SearchFn();
  std::vector<Figures> ours_rows, direct_rows;
  for (size_t ef : a.ef_search) {
    hnsw_index->tune_search(ef, 0);
    if (!direct) {
      ours_rows.push_back(measure_side_by_side({ours}, a, truth)[0]);
      print_figures(ef, "ours", ours_rows.back());
      continue;
    }
    direct->index.setEf(ef);
    use_our_kernel(*direct);
    const auto both = measure_side_by_side({ours, reference}, a, truth);
    ours_rows.push_back(both[0]);
    direct_rows.push_back(both[1]);
    print_figures(ef, "ours", both[0]);
    print_figures(ef, "hnswlib", both[1]);
    if (two_kernels) {
      direct->index.fstdistfunc_ = direct->stock_distance;
      print_figures(ef, "hnswlib-stock", measure_side_by_side({reference}, a, truth)[0]);
    }
    print_ratio(ef, both[0], both[1]);
  }
  std::printf("operating point (smallest ef_search with recall@k >= %.2f):\n", a.target_recall);
  const auto ours_point = operating_point(a.ef_search, ours_rows, a.target_recall);
  print_operating_point("ours", a, ours_rows, ours_point);
  if (direct) {
    const auto direct_point = operating_point(a.ef_search, direct_rows, a.target_recall);
    print_operating_point("hnswlib", a, direct_rows, direct_point);
    if (ours_point && direct_point) {
      const Figures &o = ours_rows[*ours_point], &d = direct_rows[*direct_point];
      std::printf("  ours/hnswlib: p99 %.2f, qps_1t %.2f, qps_%zut %.2f\n", o.latency.p99_ms / d.latency.p99_ms,
                  o.qps_1 / d.qps_1, a.threads, o.qps_n / d.qps_n);
    }
  }
  direct.reset();  // before anything else allocates: at 1M it holds ~5.3 GB

  hnsw_index->tune_search(options.ef_search, a.n + 1);
  {
    auto [lat, recall] = measure(ours, std::min<size_t>(20, a.queries), a.k, &truth);
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
  std::vector<float>().swap(data);
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
  std::printf("memory after restart (raw data and hnswlib freed): VmRSS %.0f MB = %.0f bytes/vector\n",
              read_rss().rss / kMB, read_rss().rss / reopened->count());
  {
    auto [lat, recall] = measure(search_ours(*reopened, queries, a.dim, a.k), a.queries, a.k, nullptr);
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
    auto exact = measure(search_ours(*index, queries, a.dim, a.k), a.queries, a.k, nullptr).first;
    index->tune_search(options.ef_search, 0);
    auto graph = measure(search_ours(*index, queries, a.dim, a.k), a.queries, a.k, nullptr).first;
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
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // a long run's lines appear as they come, even in a file
  const Args args = parse_args(argc, argv);
  if (args.crossover) return run_crossover(args);
  if (args.upserts) return run_upserts(args);
  return run_recall(args);
}
