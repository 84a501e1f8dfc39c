#include "vectors/hnsw/hnsw_index.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/log.h"
#include "vectors/hnsw/durable_file.h"
#include "vectors/hnsw/hnsw_graph.h"
#include "vectors/hnsw/write_ahead_log.h"

namespace deeplens {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxIdBytes = 1024;
constexpr size_t kMaxDimension = 65536;
constexpr size_t kParallelBatchMin = 16;
constexpr const char* kMetaFile = "collection.meta";
constexpr const char* kCurrentFile = "CURRENT";
constexpr const char* kMetaMagic = "deeplens-hnsw-collection 1";
constexpr char kIdsMagic[8] = {'D', 'L', 'H', 'N', 'S', 'W', 'I', 'D'};
constexpr uint32_t kIdsVersion = 1;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::string snapshot_path(const std::string& dir, uint64_t generation, const char* ext) {
  char name[64];
  std::snprintf(name, sizeof name, "snapshot-%020llu%s", static_cast<unsigned long long>(generation), ext);
  return dir + "/" + name;
}

// The generation of "snapshot-<20 digits>.<ext>[.tmp]", or nullopt.
std::optional<uint64_t> parse_snapshot_name(std::string_view name) {
  constexpr std::string_view kPrefix = "snapshot-";
  if (!name.starts_with(kPrefix) || name.size() < kPrefix.size() + 21 || name[kPrefix.size() + 20] != '.') {
    return std::nullopt;
  }
  uint64_t gen = 0;
  for (char c : name.substr(kPrefix.size(), 20)) {
    if (c < '0' || c > '9') return std::nullopt;
    gen = gen * 10 + static_cast<uint64_t>(c - '0');
  }
  return gen;
}

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

// Bounds-checked reader over a snapshot id map.
class BlobReader {
 public:
  explicit BlobReader(std::string_view data) : data_(data) {}
  template <typename T>
  bool get(T& v) {
    if (data_.size() - pos_ < sizeof v) return false;
    std::memcpy(&v, data_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return true;
  }
  bool get_string(size_t n, std::string& out) {
    if (data_.size() - pos_ < n) return false;
    out.assign(data_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  size_t pos() const { return pos_; }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

Error invalid(const std::string& collection, std::string message) {
  return Error(ErrorCode::kInvalidArgument, std::move(message)).with("collection", collection);
}

Status validate_id(const std::string& collection, std::string_view id) {
  if (id.empty()) return invalid(collection, "vector id is empty");
  if (id.size() > kMaxIdBytes) {
    return invalid(collection, "vector id is longer than " + std::to_string(kMaxIdBytes) + " bytes")
        .with("id", std::string(id.substr(0, 64)) + "...");
  }
  return ok_status();
}

}  // namespace

struct HnswIndex::Pending {
  std::string_view id;
  const float* vector = nullptr;
  uint64_t label = 0;
  bool update = false;  // the label is already in the graph (a replacement or a reused slot)
  bool skip = false;    // replaces an identical vector: nothing to do in the graph
};

HnswIndex::HnswIndex(std::string dir, std::string name, size_t dimension, const HnswOptions& options)
    : dir_(std::move(dir)),
      name_(std::move(name)),
      dimension_(dimension),
      options_(options),
      exact_search_below_(options.exact_search_below),
      ef_search_(std::max<size_t>(options.ef_search, 1)) {}

size_t ef_for_size(size_t ef_search, size_t live) {
  if (live <= kEfBaseVectors) return ef_search;
  const double scale = 1.0 + std::log2(static_cast<double>(live) / kEfBaseVectors) / 2.0;
  const auto ef = static_cast<size_t>(std::ceil(static_cast<double>(ef_search) * scale / 8.0)) * 8;
  return std::max(ef, ef_search);
}

HnswIndex::~HnswIndex() = default;

Result<std::unique_ptr<HnswIndex>> HnswIndex::create(const std::string& dir, std::string name,
                                                     size_t dimension, const HnswOptions& options) {
  if (dimension == 0 || dimension > kMaxDimension) {
    return invalid(name, "dimension must be between 1 and " + std::to_string(kMaxDimension))
        .with("dimension", std::to_string(dimension));
  }
  if (Status s = hnsw::create_directories_durably(dir); !s.ok()) return std::move(s).error();
  const std::string meta = dir + "/" + kMetaFile;
  auto existing = hnsw::read_whole_file(meta);
  if (!existing.ok()) {
    if (existing.error().code != ErrorCode::kNotFound) return std::move(existing).error();
    const std::string contents = std::string(kMetaMagic) + "\ndimension " + std::to_string(dimension) +
                                 "\nmetric cosine\n";
    if (Status s = hnsw::write_file_atomically(meta, contents); !s.ok()) return std::move(s).error();
  }
  return open(dir, std::move(name), options);
}

Result<std::unique_ptr<HnswIndex>> HnswIndex::open(const std::string& dir, std::string name,
                                                   const HnswOptions& options) {
  const std::string meta_path = dir + "/" + kMetaFile;
  auto meta = hnsw::read_whole_file(meta_path);
  if (!meta.ok()) {
    if (meta.error().code == ErrorCode::kNotFound) {
      return Error(ErrorCode::kNotFound, "no vector collection in this directory").with("path", dir);
    }
    return std::move(meta).error();
  }
  size_t dimension = 0;
  unsigned long long parsed = 0;
  if (!meta->starts_with(std::string(kMetaMagic) + "\n") ||
      std::sscanf(meta->c_str() + std::strlen(kMetaMagic) + 1, "dimension %llu", &parsed) != 1 ||
      parsed == 0 || parsed > kMaxDimension) {
    return Error(ErrorCode::kInternal,
                 "collection metadata is unreadable; restore the directory from a backup")
        .with("path", meta_path);
  }
  dimension = static_cast<size_t>(parsed);
  std::unique_ptr<HnswIndex> index(new HnswIndex(dir, std::move(name), dimension, options));
  if (Status s = index->load(dir); !s.ok()) return std::move(s).error();
  return index;
}

Status HnswIndex::load(const std::string& dir) {
  const auto start = Clock::now();
  namespace fs = std::filesystem;

  uint64_t generation = 0;
  auto current = hnsw::read_whole_file(dir + "/" + kCurrentFile);
  if (current.ok()) {
    unsigned long long g = 0;
    if (std::sscanf(current->c_str(), "snapshot %llu", &g) != 1) {
      return Error(ErrorCode::kInternal, "CURRENT is unreadable").with("path", dir + "/" + kCurrentFile);
    }
    generation = g;
  } else if (current.error().code != ErrorCode::kNotFound) {
    return std::move(current).error();
  }

  std::vector<uint64_t> segments;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (auto g = hnsw::parse_segment_name(entry.path().filename().string()); g && *g >= generation) {
      segments.push_back(*g);
    }
  }
  if (ec) return hnsw::io_error("cannot list collection directory", dir, ec.value());
  std::sort(segments.begin(), segments.end());

  // 1. The snapshot in effect.
  if (generation > 0) {
    const std::string ids_path = snapshot_path(dir, generation, ".ids");
    auto blob = hnsw::read_whole_file(ids_path);
    if (!blob.ok()) return std::move(blob).error();
    auto corrupt = [&](const char* why) {
      return Error(ErrorCode::kInternal,
                   std::string("snapshot id map is corrupt (") + why +
                       "); restore the collection directory from a backup")
          .with("path", ids_path);
    };
    if (blob->size() < sizeof(kIdsMagic) + 4) return corrupt("short");
    uint32_t stored_crc;
    std::memcpy(&stored_crc, blob->data() + blob->size() - 4, 4);
    if (hnsw::crc32(blob->data(), blob->size() - 4) != stored_crc) return corrupt("checksum");
    BlobReader r(std::string_view(*blob).substr(0, blob->size() - 4));
    std::string magic;
    uint32_t version = 0, dim = 0;
    uint64_t gen = 0, graph_bytes = 0, next_label = 0, live = 0;
    if (!r.get_string(sizeof kIdsMagic, magic) || magic != std::string_view(kIdsMagic, sizeof kIdsMagic) ||
        !r.get(version) || version != kIdsVersion || !r.get(dim) || dim != dimension_ ||
        !r.get(gen) || gen != generation || !r.get(graph_bytes) || !r.get(next_label) || !r.get(live)) {
      return corrupt("header");
    }
    if (next_label > (uint64_t{1} << 32) || live > next_label) return corrupt("counts");
    next_label_ = next_label;
    id_of_label_.assign(next_label, std::string());
    label_of_.reserve(live);
    for (uint64_t i = 0; i < live; ++i) {
      uint64_t label = 0;
      uint32_t size = 0;
      std::string id;
      if (!r.get(label) || !r.get(size) || !r.get_string(size, id) || label >= next_label || id.empty() ||
          !id_of_label_[label].empty() || !label_of_.emplace(id, label).second) {
        return corrupt("entry");
      }
      id_of_label_[label] = std::move(id);
    }
    uint64_t free_count = 0;
    if (!r.get(free_count) || free_count > next_label) return corrupt("free list");
    free_labels_.resize(free_count);
    for (auto& label : free_labels_) {
      if (!r.get(label) || label >= next_label || !id_of_label_[label].empty()) return corrupt("free list");
    }

    const std::string graph_path = snapshot_path(dir, generation, ".hnsw");
    auto size = hnsw::file_size(graph_path);
    if (!size.ok()) return std::move(size).error();
    if (*size != graph_bytes) return corrupt("graph file size differs from the recorded one");
    auto graph = hnsw::HnswGraph::load(graph_path, dimension_, options_.initial_capacity);
    if (!graph.ok()) return std::move(graph).error();
    graph_ = std::move(*graph);
    size_t graph_live = 0;
    bool consistent = true;
    graph_->for_each_element([&](uint64_t label, bool deleted) {
      if (label >= next_label_ || deleted != id_of_label_[label].empty()) consistent = false;
      if (!deleted) ++graph_live;
    });
    if (!consistent || graph_live != label_of_.size()) return corrupt("id map does not match the graph");
  } else {
    auto graph = hnsw::HnswGraph::create(dimension_, options_.m, options_.ef_construction,
                                         options_.initial_capacity, options_.random_seed);
    if (!graph.ok()) return std::move(graph).error();
    graph_ = std::move(*graph);
  }
  graph_->set_ef_search(std::max<size_t>(options_.ef_search, 1));
  graph_->set_ef_construction(options_.ef_construction);
  open_report_.snapshot_generation = generation;
  open_report_.snapshot_vectors = label_of_.size();
  open_report_.load_ms = ms_since(start);

  // 2. Replay the log after it: the net effect per id, then one parallel batch.
  const auto replay_start = Clock::now();
  std::unordered_map<std::string, std::optional<std::vector<float>>> net;
  uint64_t records = 0, log_bytes = 0, last_valid = 0;
  for (size_t i = 0; i < segments.size(); ++i) {
    const std::string path = hnsw::segment_path(dir, segments[i]);
    auto scan = hnsw::scan_segment(path, dimension_, [&](hnsw::LogRecord&& rec) {
      if (rec.op == hnsw::LogOp::kUpsert) {
        net[std::move(rec.id)] = std::move(rec.vector);
      } else {
        net[std::move(rec.id)] = std::nullopt;
      }
    });
    if (!scan.ok()) return std::move(scan).error();
    records += scan->records;
    log_bytes += scan->valid_bytes;
    last_valid = scan->valid_bytes;
    if (scan->valid_bytes < scan->file_bytes) {
      const uint64_t torn = scan->file_bytes - scan->valid_bytes;
      open_report_.torn_bytes_dropped += torn;
      log_warn("vectors.log_tail_dropped",
               {{"collection", name_}, {"path", path}, {"validBytes", scan->valid_bytes},
                {"droppedBytes", torn}});
      // The last segment is truncated when it is reopened for appending below.
      if (i + 1 < segments.size() && ::truncate(path.c_str(), static_cast<off_t>(scan->valid_bytes)) != 0) {
        return hnsw::io_error("cannot truncate torn log tail", path, errno);
      }
    }
  }
  std::vector<Pending> upserts;
  for (auto& [id, vector] : net) {
    if (vector) {
      upserts.push_back(Pending{id, vector->data()});
    } else if (Status s = apply_remove_locked(id); !s.ok()) {
      return s;
    }
  }
  if (Status s = apply_upserts_locked(upserts); !s.ok()) return s;
  count_ = label_of_.size();
  open_report_.log_segments = segments.size();
  open_report_.records_replayed = records;
  open_report_.replay_ms = ms_since(replay_start);

  // 3. Continue the last segment.
  const uint64_t active = segments.empty() ? generation : segments.back();
  auto log = hnsw::WriteAheadLog::open(dir, active, segments.empty() ? 0 : last_valid, options_.sync_writes);
  if (!log.ok()) return std::move(log).error();
  log_ = std::move(*log);
  log_bytes_since_snapshot_ = log_bytes;
  remove_obsolete_files(generation);

  open_report_.total_ms = ms_since(start);
  log_info("vectors.collection_opened",
           {{"collection", name_},
            {"vectors", count()},
            {"dimension", dimension_},
            {"snapshotGeneration", generation},
            {"snapshotVectors", open_report_.snapshot_vectors},
            {"logSegments", open_report_.log_segments},
            {"recordsReplayed", records},
            {"tornBytesDropped", open_report_.torn_bytes_dropped},
            {"loadMs", open_report_.load_ms},
            {"replayMs", open_report_.replay_ms},
            {"totalMs", open_report_.total_ms}});
  return ok_status();
}

void HnswIndex::remove_obsolete_files(uint64_t current_generation) {
  namespace fs = std::filesystem;
  std::error_code ec;
  bool removed = false;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string file = entry.path().filename().string();
    bool obsolete = file.ends_with(".tmp");
    if (auto g = hnsw::parse_segment_name(file)) obsolete = *g < current_generation;
    if (auto g = parse_snapshot_name(file)) obsolete = obsolete || *g != current_generation;
    if (obsolete) {
      if (Status s = hnsw::remove_file(entry.path().string()); !s.ok()) {
        log_warn("vectors.cleanup_failed", {{"collection", name_}, {"error", s.error().to_string()}});
      } else {
        removed = true;
      }
    }
  }
  if (removed) (void)hnsw::fsync_directory(dir_);
}

Result<std::vector<float>> HnswIndex::normalised(std::string_view id, std::span<const float> v,
                                                 const char* what) const {
  auto bad = [&](std::string message) {
    Error e = invalid(name_, std::string(what) + " " + std::move(message));
    if (!id.empty()) e.with("id", std::string(id));
    return e;
  };
  if (v.size() != dimension_) {
    return bad("has dimension " + std::to_string(v.size()) + " but the collection's is " +
               std::to_string(dimension_));
  }
  double norm2 = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) return bad("contains NaN or Inf at index " + std::to_string(i));
    norm2 += double{v[i]} * double{v[i]};
  }
  if (norm2 == 0 || !std::isfinite(norm2)) return bad("has zero (or overflowing) length");
  const double inv = 1.0 / std::sqrt(norm2);
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i] * inv);
  return out;
}

Status HnswIndex::upsert(std::string_view id, std::span<const float> vector) {
  const VectorUpsert one{id, vector};
  return upsert_batch(std::span<const VectorUpsert>(&one, 1));
}

Status HnswIndex::upsert_batch(std::span<const VectorUpsert> batch) {
  if (batch.empty()) return ok_status();
  std::vector<std::vector<float>> vectors(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    if (Status s = validate_id(name_, batch[i].id); !s.ok()) return s;
    auto v = normalised(batch[i].id, batch[i].vector, "vector");
    if (!v.ok()) return std::move(v).error();
    vectors[i] = std::move(*v);
  }
  // A later duplicate wins: keep only the last occurrence of each id.
  std::vector<size_t> keep;
  keep.reserve(batch.size());
  if (batch.size() == 1) {
    keep.push_back(0);
  } else {
    std::unordered_map<std::string_view, size_t> last;
    for (size_t i = 0; i < batch.size(); ++i) last[batch[i].id] = i;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (last[batch[i].id] == i) keep.push_back(i);
    }
  }
  std::string records;
  records.reserve(keep.size() * (32 + dimension_ * sizeof(float)));
  std::vector<Pending> items;
  items.reserve(keep.size());
  for (size_t i : keep) {
    hnsw::encode_upsert(records, batch[i].id, vectors[i]);
    items.push_back(Pending{batch[i].id, vectors[i].data()});
  }

  uint64_t lsn = 0;
  {
    std::lock_guard write_lock(write_mu_);
    std::unique_lock lock(mu_);
    if (broken_) return *broken_;
    // Grow the graph before logging, so the likely failure (memory) leaves nothing half-done.
    size_t new_ids = 0;
    for (const auto& item : items) new_ids += label_of_.count(item.id) == 0 ? 1 : 0;
    const size_t fresh = new_ids > free_labels_.size() ? new_ids - free_labels_.size() : 0;
    const size_t needed = graph_->element_count() + fresh;
    if (needed > graph_->capacity()) {
      if (Status s = graph_->reserve(std::max(needed, graph_->capacity() * 2)); !s.ok()) return s;
    }
    auto appended = log_->append(records);
    if (!appended.ok()) return std::move(appended).error();
    lsn = *appended;
    log_bytes_since_snapshot_ += records.size();
    if (Status s = apply_upserts_locked(items); !s.ok()) {
      broken_ = Error(ErrorCode::kInternal,
                      "a logged change could not be applied to the graph; reopen the collection "
                      "(the log replays it): " + s.error().to_string())
                    .with("collection", name_);
      return *broken_;
    }
  }
  return log_->sync(lsn);
}

Status HnswIndex::apply_upserts_locked(std::vector<Pending>& items) {
  if (items.empty()) return ok_status();
  size_t new_ids = 0;
  for (const auto& item : items) new_ids += label_of_.count(item.id) == 0 ? 1 : 0;
  const size_t fresh = new_ids > free_labels_.size() ? new_ids - free_labels_.size() : 0;
  const size_t needed = graph_->element_count() + fresh;
  if (needed > graph_->capacity()) {
    if (Status s = graph_->reserve(std::max(needed, graph_->capacity() * 2)); !s.ok()) return s;
  }

  std::vector<float> current(dimension_);
  for (auto& item : items) {
    if (auto it = label_of_.find(item.id); it != label_of_.end()) {
      item.label = it->second;
      item.update = true;
      // At-least-once delivery re-sends the same vector; the graph need not be touched then.
      item.skip = graph_->copy_vector(item.label, current.data()) &&
                  std::memcmp(current.data(), item.vector, dimension_ * sizeof(float)) == 0;
      continue;
    }
    if (!free_labels_.empty()) {
      item.label = free_labels_.back();
      free_labels_.pop_back();
      item.update = true;
    } else {
      item.label = next_label_++;
      id_of_label_.emplace_back();
    }
    id_of_label_[item.label] = std::string(item.id);
    label_of_.emplace(std::string(item.id), item.label);
  }
  count_ = label_of_.size();

  // New elements are inserted in parallel (hnswlib's addPoint is built for that). Replacements
  // and reused slots go through hnswlib's update path, which rewrites an element's links without
  // its lock, so they run one at a time afterwards.
  std::vector<const Pending*> fresh_items, updates;
  for (const auto& item : items) {
    if (!item.skip) (item.update ? updates : fresh_items).push_back(&item);
  }
  std::atomic<size_t> next{0};
  std::mutex error_mu;
  std::optional<Error> error;
  auto insert_all = [&] {
    for (size_t i = next.fetch_add(1); i < fresh_items.size(); i = next.fetch_add(1)) {
      if (Status s = graph_->add(fresh_items[i]->label, fresh_items[i]->vector); !s.ok()) {
        std::lock_guard lock(error_mu);
        if (!error) error = std::move(s).error();
      }
    }
  };
  std::vector<std::thread> helpers;
  if (fresh_items.size() >= kParallelBatchMin) {
    for (size_t t = 1; t < options_.insert_threads; ++t) {
      try {
        helpers.emplace_back(insert_all);
      } catch (const std::system_error&) {
        break;  // fewer threads, same result
      }
    }
  }
  insert_all();
  for (auto& t : helpers) t.join();
  if (error) return *error;
  for (const Pending* item : updates) {
    if (Status s = graph_->add(item->label, item->vector); !s.ok()) return s;
  }
  return ok_status();
}

Status HnswIndex::apply_remove_locked(std::string_view id) {
  auto it = label_of_.find(id);
  if (it == label_of_.end()) return ok_status();
  const uint64_t label = it->second;
  if (Status s = graph_->mark_deleted(label); !s.ok()) return s;
  label_of_.erase(it);
  id_of_label_[label].clear();
  free_labels_.push_back(label);
  count_ = label_of_.size();
  return ok_status();
}

Status HnswIndex::remove(std::string_view id) {
  if (Status s = validate_id(name_, id); !s.ok()) return s;
  std::string record;
  hnsw::encode_remove(record, id);
  uint64_t lsn = 0;
  {
    std::lock_guard write_lock(write_mu_);
    std::unique_lock lock(mu_);
    if (broken_) return *broken_;
    if (label_of_.find(id) == label_of_.end()) {
      // Absent in memory, but a concurrent remove may not be durable yet: wait for it too.
      lsn = log_->end_lsn();
    } else {
      auto appended = log_->append(record);
      if (!appended.ok()) return std::move(appended).error();
      lsn = *appended;
      log_bytes_since_snapshot_ += record.size();
      if (Status s = apply_remove_locked(id); !s.ok()) {
        broken_ = Error(ErrorCode::kInternal,
                        "a logged remove could not be applied to the graph; reopen the collection: " +
                            s.error().to_string())
                      .with("collection", name_);
        return *broken_;
      }
    }
  }
  return log_->sync(lsn);
}

std::vector<std::string> HnswIndex::ids() const {
  std::shared_lock lock(mu_);
  std::vector<std::string> out;
  out.reserve(label_of_.size());
  for (const auto& [id, label] : label_of_) out.push_back(id);
  return out;
}

Result<std::vector<float>> HnswIndex::get(std::string_view id) const {
  std::vector<float> out(dimension_);
  std::shared_lock lock(mu_);
  auto it = label_of_.find(id);
  if (it == label_of_.end() || !graph_->copy_vector(it->second, out.data())) {
    return Error(ErrorCode::kNotFound, "no vector with this id in the collection")
        .with("collection", name_)
        .with("id", std::string(id));
  }
  return out;
}

Result<std::vector<SearchHit>> HnswIndex::search(std::span<const float> query, size_t k, float min_score,
                                                 const SearchOptions& options) const {
  auto q = normalised({}, query, "query vector");
  if (!q.ok()) return std::move(q).error();
  std::vector<SearchHit> hits;
  if (k == 0) return hits;
  std::shared_lock lock(mu_);
  const size_t live = label_of_.size();
  if (live == 0) return hits;
  std::vector<hnsw::ScoredLabel> found;
  if (options.exact || live < exact_search_below_) {
    found = graph_->exact_search(q->data(), k);
  } else {
    // hnswlib searches with max(ef_search, k) candidates: asking for ef of them and keeping the
    // best k is a search with that ef, without touching the shared setting.
    const size_t ef = options_.ef_grows_with_size ? ef_for_size(ef_search_, live) : ef_search_;
    auto r = graph_->search(q->data(), std::max({k, options.ef, ef}));
    if (!r.ok()) return std::move(r).error().with("collection", name_);
    found = std::move(*r);
    if (found.size() > k) found.resize(k);
  }
  hits.reserve(found.size());
  for (const auto& f : found) {
    const float score = std::clamp(f.score, -1.0f, 1.0f);
    if (score < min_score) break;  // best first
    if (f.label >= id_of_label_.size() || id_of_label_[f.label].empty()) continue;
    hits.push_back(SearchHit{id_of_label_[f.label], score});
  }
  return hits;
}

void HnswIndex::tune_search(size_t ef_search, size_t exact_search_below) {
  std::unique_lock lock(mu_);
  graph_->set_ef_search(std::max<size_t>(ef_search, 1));
  ef_search_ = std::max<size_t>(ef_search, 1);
  exact_search_below_ = exact_search_below;
}

std::string HnswIndex::encode_id_map_locked(uint64_t generation, uint64_t graph_bytes) const {
  std::string out;
  out.reserve(64 + label_of_.size() * 48 + free_labels_.size() * 8);
  out.append(kIdsMagic, sizeof kIdsMagic);
  put<uint32_t>(out, kIdsVersion);
  put<uint32_t>(out, static_cast<uint32_t>(dimension_));
  put<uint64_t>(out, generation);
  put<uint64_t>(out, graph_bytes);
  put<uint64_t>(out, next_label_);
  put<uint64_t>(out, label_of_.size());
  for (uint64_t label = 0; label < id_of_label_.size(); ++label) {
    const std::string& id = id_of_label_[label];
    if (id.empty()) continue;
    put<uint64_t>(out, label);
    put<uint32_t>(out, static_cast<uint32_t>(id.size()));
    out += id;
  }
  put<uint64_t>(out, free_labels_.size());
  for (uint64_t label : free_labels_) put<uint64_t>(out, label);
  put<uint32_t>(out, hnsw::crc32(out.data(), out.size()));
  return out;
}

Status HnswIndex::write_snapshot_files(uint64_t generation, const std::string& ids_blob) {
  const std::string graph_path = snapshot_path(dir_, generation, ".hnsw");
  const std::string graph_tmp = graph_path + ".tmp";
  if (Status s = hnsw::fsync_file(graph_tmp); !s.ok()) return s;
  if (::rename(graph_tmp.c_str(), graph_path.c_str()) != 0) {
    return hnsw::io_error("cannot rename graph snapshot", graph_path, errno);
  }
  // Also fsyncs the directory, which makes the rename above durable.
  if (Status s = hnsw::write_file_atomically(snapshot_path(dir_, generation, ".ids"), ids_blob); !s.ok()) {
    return s;
  }
  return hnsw::write_file_atomically(dir_ + "/" + kCurrentFile,
                                     "snapshot " + std::to_string(generation) + "\n");
}

Status HnswIndex::checkpoint() {
  std::lock_guard checkpoint_lock(checkpoint_mu_);
  const auto start = Clock::now();
  uint64_t generation = 0;
  uint64_t covered_log_bytes = 0;
  uint64_t graph_bytes = 0;
  size_t vectors = 0;
  std::string ids_blob;
  double pause_ms = 0;
  {
    // Writers wait on write_mu_ (not on mu_, so searches are not queued behind them); the graph,
    // the id map and the log position all describe the same moment.
    std::lock_guard write_lock(write_mu_);
    std::shared_lock lock(mu_);
    if (broken_) return *broken_;
    covered_log_bytes = log_bytes_since_snapshot_.load();
    if (covered_log_bytes == 0) return ok_status();
    generation = log_->generation() + 1;
    const std::string graph_tmp = snapshot_path(dir_, generation, ".hnsw") + ".tmp";
    auto saved = graph_->save(graph_tmp);
    if (!saved.ok()) {
      (void)hnsw::remove_file(graph_tmp);
      return std::move(saved).error().with("collection", name_);
    }
    graph_bytes = *saved;
    ids_blob = encode_id_map_locked(generation, graph_bytes);
    if (Status s = log_->rotate(generation); !s.ok()) {
      (void)hnsw::remove_file(graph_tmp);
      return s;
    }
    log_bytes_since_snapshot_ -= covered_log_bytes;  // nothing was appended meanwhile
    vectors = label_of_.size();
    pause_ms = ms_since(start);
  }
  if (Status s = write_snapshot_files(generation, ids_blob); !s.ok()) {
    // The old snapshot stays in effect and every segment after it is kept: nothing is lost, the
    // next checkpoint tries again.
    log_bytes_since_snapshot_ += covered_log_bytes;
    log_error("vectors.checkpoint_failed", {{"collection", name_}, {"error", s.error().to_string()}});
    return s;
  }
  remove_obsolete_files(generation);
  log_info("vectors.checkpoint",
           {{"collection", name_},
            {"generation", generation},
            {"vectors", vectors},
            {"graphBytes", graph_bytes},
            {"logBytesCovered", covered_log_bytes},
            {"writersPausedMs", pause_ms},
            {"totalMs", ms_since(start)}});
  return ok_status();
}

}  // namespace deeplens
