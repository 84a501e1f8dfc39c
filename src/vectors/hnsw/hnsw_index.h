// HnswIndex: the embedded VectorIndex of one collection: an in-memory HNSW graph (hnswlib, cosine
// on L2-normalised vectors) made durable by a write-ahead log plus periodic snapshots.
//
// Search: exact (brute force over the stored vectors) while the collection holds fewer than
// HnswOptions::exact_search_below live vectors, HNSW above. Small collections then get perfect
// recall at a cost well inside the search budget, and large ones get HNSW's sub-millisecond
// queries (see HnswOptions and bench/README.md for the numbers behind the defaults).
//
// Ids map to dense hnswlib labels (id <-> label maps here). Upserting an existing id replaces its
// vector in place (hnswlib's update path; an identical re-delivered vector is not re-inserted).
// remove() marks the element deleted in the graph and puts its label on a free list; the next new
// id reuses that slot, so the graph does not grow with churn (hnswlib 0.6.2 has no
// replace_deleted of its own). The graph grows by doubling.
//
// On-disk layout, one directory per collection (<root>/<collection>/):
//   collection.meta                 "deeplens-hnsw-collection 1", dimension, metric; written once
//   CURRENT                         "snapshot <G>": the snapshot in effect (absent: none yet, G=0)
//   snapshot-<G>.hnsw / .ids        the graph (hnswlib's format) and the id<->label map, which
//                                   together hold every change logged in segments < G
//   wal-<G>.log, wal-<G+1>.log ...  the write-ahead log after that snapshot (write_ahead_log.h)
// Durability: upsert()/remove() append a record (op, id, normalised vector, CRC-32), apply it to
// the graph, and return after an fdatasync that covers the record; concurrent writers share
// fsyncs (group commit). A change is visible to search() as soon as it is applied, i.e. possibly
// a moment before it is acknowledged; only acknowledged changes are guaranteed after a crash.
// checkpoint(): with writers paused (searches go on) the log moves to a new segment G+1 and the
// graph and id map are written to temp files; then, with writers running again, the files are
// fsynced and renamed, CURRENT is replaced atomically, and segments < G+1 are deleted. A crash
// at any step leaves either the old or the new snapshot in effect with every later segment.
// open(): loads the CURRENT snapshot, replays segments >= G in order (net effect per id, inserted
// in parallel), truncates a torn final record, deletes leftovers, and logs the start-up time.
//
// Ownership: owns its graph, log and files; the directory must not be shared with another
// instance (HnswVectorStore holds a lock file on the root).
// Thread-safety: every method may be called concurrently. Searches and get() run in parallel
// (shared lock); writes are serialised and hold the lock exclusively only while appending and
// changing the graph, not while waiting for fsync; a waiting writer goes before new searches, so
// a search waits at most for one write in progress. checkpoint() runs beside searches and pauses
// writers only while the graph is serialised.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>  // std::shared_lock over WriterPriorityMutex
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "vectors/hnsw/writer_priority_mutex.h"
#include "vectors/vector_index.h"

namespace deeplens::hnsw {
class HnswGraph;
class WriteAheadLog;
}  // namespace deeplens::hnsw

namespace deeplens {

struct HnswOptions {
  // HNSW graph degree (2*m links per node on layer 0). Fixed when a collection is created; a
  // reopened collection keeps the m it was built with.
  size_t m = 16;
  // Candidate list size while inserting: higher builds a better graph, slower. 128 (hnswlib's
  // usual is 200) builds 100k x 1280-d at ~1500 vectors/s on 2 cores with recall@10 0.999 at
  // ef_search 64 (bench/README.md).
  size_t ef_construction = 128;
  // Candidate list size while searching, for collections of up to kEfBaseVectors; a larger one
  // searches with ef_for_size(ef_search, size) when ef_grows_with_size; a search for more than ef
  // results uses k. At 100k x 1280-d: 32 -> recall@10 0.990, p99 0.38 ms; 64 -> 0.999, p99 0.61
  // ms; 128 -> 0.9995, p99 1.1 ms.
  size_t ef_search = 64;
  bool ef_grows_with_size = true;
  // Search is exact while the collection holds fewer live vectors than this. At 1280-d exact and
  // HNSW cost the same at ~2000 vectors (0.35 ms p50); above, exact grows linearly (0.8 ms at 4k,
  // 43 ms at 100k) while HNSW stays flat. Below it, exact gives perfect recall for free.
  size_t exact_search_below = 2048;
  // Elements allocated when a collection is created; the graph doubles as it fills.
  size_t initial_capacity = 1024;
  // Threads that insert the new vectors of an upsert_batch() (from 16 on) and of log replay;
  // replacements and reused slots are applied one at a time (hnswlib's update path is not safe
  // to run concurrently with other inserts).
  size_t insert_threads = 2;
  // fdatasync before acknowledging. false only for benchmarks that measure the index alone.
  bool sync_writes = true;
  // HnswVectorStore's background checkpointer snapshots a collection once its log has grown by
  // this much since the last snapshot. It bounds restart time against snapshot write
  // amplification: replay re-inserts every logged vector (64 MiB ~ 13k 1280-d vectors ~ 10 s on
  // 2 cores at 100k), while a checkpoint rewrites the whole graph (~0.55 GB, ~2.5 s at 100k).
  uint64_t checkpoint_log_bytes = 64ull << 20;
  // How often the background checkpointer looks at log sizes.
  std::chrono::milliseconds checkpoint_poll_interval{1000};
  // Seed of hnswlib's level generator (reproducible graphs when insert_threads is 1).
  uint64_t random_seed = 100;
};

// The candidate list size a collection of `live` vectors searches with: ef_search up to
// kEfBaseVectors, then ef_search * (1 + log2(live / kEfBaseVectors) / 2) rounded up to a multiple
// of 8 — 1.5x at 500k, 2x at 1M, 2.5x at 2M. At fixed ef, recall@10 falls with size (clustered
// 1280-d, bench/README.md: ef 64 gives 0.999 at 100k, 0.907 at 1M, where ef 96 gives 0.961 and 128
// 0.981); the rule keeps the 100k operating point up to 250k and gives 1M the ef 128 it needs,
// with cost growing like log(size) as HNSW's does.
inline constexpr size_t kEfBaseVectors = 250000;
size_t ef_for_size(size_t ef_search, size_t live);

// What open() found and did; also logged as "vectors.collection_opened".
struct HnswOpenReport {
  uint64_t snapshot_generation = 0;
  size_t snapshot_vectors = 0;
  uint64_t log_segments = 0;
  uint64_t records_replayed = 0;
  uint64_t torn_bytes_dropped = 0;
  double load_ms = 0;
  double replay_ms = 0;
  double total_ms = 0;
};

class HnswIndex final : public VectorIndex {
 public:
  // Creates the collection directory dir (for a new collection of this dimension) and opens it.
  static Result<std::unique_ptr<HnswIndex>> create(const std::string& dir, std::string name,
                                                   size_t dimension, const HnswOptions& options);
  // Opens an existing collection directory; kNotFound when it holds no collection.
  static Result<std::unique_ptr<HnswIndex>> open(const std::string& dir, std::string name,
                                                 const HnswOptions& options);
  ~HnswIndex() override;

  const std::string& name() const override { return name_; }
  size_t dimension() const override { return dimension_; }
  size_t count() const override { return count_.load(std::memory_order_relaxed); }

  Status upsert(std::string_view id, std::span<const float> vector) override;
  Status upsert_batch(std::span<const VectorUpsert> batch) override;
  Status remove(std::string_view id) override;
  std::vector<std::string> ids() const override;
  Result<std::vector<float>> get(std::string_view id) const override;
  using VectorIndex::search;
  Result<std::vector<SearchHit>> search(std::span<const float> query, size_t k, float min_score,
                                        const SearchOptions& options) const override;

  // Changes the search parameters of HnswOptions at run time (waits for running searches).
  void tune_search(size_t ef_search, size_t exact_search_below);
  // Writes a snapshot and drops the log it covers; OK and a no-op when nothing changed.
  Status checkpoint();
  // Log bytes written since the last snapshot (what a checkpoint would make unnecessary to replay).
  uint64_t log_bytes_since_checkpoint() const {
    return log_bytes_since_snapshot_.load(std::memory_order_relaxed);
  }
  const HnswOpenReport& open_report() const { return open_report_; }
  const std::string& directory() const { return dir_; }

 private:
  struct Pending;
  // Lets label_of_ be searched with a string_view (no temporary std::string per lookup).
  struct IdHash {
    using is_transparent = void;
    size_t operator()(std::string_view id) const { return std::hash<std::string_view>{}(id); }
  };

  HnswIndex(std::string dir, std::string name, size_t dimension, const HnswOptions& options);
  Status load(const std::string& dir);
  Result<std::vector<float>> normalised(std::string_view id, std::span<const float> v,
                                        const char* what) const;
  Status apply_upserts_locked(std::vector<Pending>& items);
  Status apply_remove_locked(std::string_view id);
  Status write_snapshot_files(uint64_t generation, const std::string& ids_blob);
  std::string encode_id_map_locked(uint64_t generation, uint64_t graph_bytes) const;
  void remove_obsolete_files(uint64_t current_generation);

  const std::string dir_;
  const std::string name_;
  const size_t dimension_;
  const HnswOptions options_;

  // write_mu_ serialises writers (log order = apply order) and lets checkpoint() pause them
  // without taking mu_ exclusively. mu_ guards the graph and the id maps: shared for search/get
  // and checkpoint, exclusive (after write_mu_) while a writer appends and changes the graph.
  // mu_ prefers writers, so searches cannot starve upserts.
  std::mutex write_mu_;
  mutable hnsw::WriterPriorityMutex mu_;
  std::unique_ptr<hnsw::HnswGraph> graph_;
  std::unordered_map<std::string, uint64_t, IdHash, std::equal_to<>> label_of_;
  std::vector<std::string> id_of_label_;  // "" for a free label
  std::vector<uint64_t> free_labels_;     // labels of removed ids, reused by new ids
  uint64_t next_label_ = 0;
  std::optional<Error> broken_;  // set when the log holds a change the graph could not apply
  size_t exact_search_below_;
  size_t ef_search_;  // HnswOptions::ef_search, as tune_search() last set it; guarded by mu_
  std::atomic<size_t> count_{0};
  std::atomic<uint64_t> log_bytes_since_snapshot_{0};

  std::unique_ptr<hnsw::WriteAheadLog> log_;  // internally synchronised

  std::mutex checkpoint_mu_;  // one checkpoint at a time

  HnswOpenReport open_report_;
};

}  // namespace deeplens
