#include "vectors/hnsw/hnsw_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>

#include "common/log.h"
#include "vectors/hnsw/durable_file.h"

namespace deeplens {
namespace {

constexpr size_t kMaxNameLength = 200;

bool valid_collection_name(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '~')) return false;
  }
  return true;
}

}  // namespace

HnswVectorStore::HnswVectorStore(std::string root, HnswOptions options, int lock_fd)
    : root_(std::move(root)), options_(std::move(options)), lock_fd_(lock_fd) {}

HnswVectorStore::~HnswVectorStore() {
  stop();
  collections_.clear();
  ::close(lock_fd_);  // releases the flock
}

Result<std::unique_ptr<HnswVectorStore>> HnswVectorStore::open(const std::string& root,
                                                               HnswOptions options) {
  if (Status s = hnsw::create_directories_durably(root); !s.ok()) return std::move(s).error();
  const std::string lock_path = root + "/LOCK";
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return hnsw::io_error("cannot open the vector store lock file", lock_path, errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return Error(ErrorCode::kFailedPrecondition,
                   "the vector store is already open in another process (or another store object); "
                   "stop it or use another directory")
          .with("path", root);
    }
    return hnsw::io_error("cannot lock the vector store", lock_path, err);
  }
  std::unique_ptr<HnswVectorStore> store(new HnswVectorStore(root, std::move(options), fd));

  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    std::error_code entry_ec;
    if (!entry.is_directory(entry_ec) || !valid_collection_name(name)) continue;
    if (!fs::exists(entry.path() / "collection.meta", entry_ec)) {
      // A crash between mkdir and the metadata write: the collection was never used.
      log_warn("vectors.collection_incomplete", {{"path", entry.path().string()}});
      continue;
    }
    names.push_back(name);
  }
  if (ec) return hnsw::io_error("cannot list the vector store", root, ec.value());
  for (const auto& name : names) {
    auto index = HnswIndex::open(root + "/" + name, name, store->options_);
    if (!index.ok()) {
      return std::move(index).error().with("collection", name);
    }
    store->collections_.emplace(name, std::move(*index));
  }
  log_info("vectors.store_opened", {{"root", root}, {"collections", store->collections_.size()}});
  return store;
}

Result<VectorIndex*> HnswVectorStore::open_collection(const std::string& name, size_t dimension) {
  if (!valid_collection_name(name)) {
    return Error(ErrorCode::kInvalidArgument,
                 "collection names are 1-200 characters of [a-z0-9_~-]; build them with collection_name()")
        .with("collection", name);
  }
  {
    std::shared_lock lock(mu_);
    if (auto it = collections_.find(name); it != collections_.end()) {
      if (it->second->dimension() != dimension) {
        return Error(ErrorCode::kFailedPrecondition,
                     "the collection exists with another dimension; a model's vectors must keep one size")
            .with("collection", name)
            .with("dimension", std::to_string(dimension))
            .with("existing", std::to_string(it->second->dimension()));
      }
      return static_cast<VectorIndex*>(it->second.get());
    }
  }
  std::unique_lock lock(mu_);
  if (collections_.count(name) == 0) {
    auto index = HnswIndex::create(root_ + "/" + name, name, dimension, options_);
    if (!index.ok()) return std::move(index).error();
    collections_.emplace(name, std::move(*index));
  }
  HnswIndex* index = collections_.at(name).get();
  if (index->dimension() != dimension) {
    return Error(ErrorCode::kFailedPrecondition,
                 "the collection exists with another dimension; a model's vectors must keep one size")
        .with("collection", name)
        .with("dimension", std::to_string(dimension))
        .with("existing", std::to_string(index->dimension()));
  }
  return static_cast<VectorIndex*>(index);
}

Result<VectorIndex*> HnswVectorStore::lookup_collection(const std::string& name) {
  std::shared_lock lock(mu_);
  auto it = collections_.find(name);
  return static_cast<VectorIndex*>(it == collections_.end() ? nullptr : it->second.get());
}

std::vector<CollectionStats> HnswVectorStore::stats() const {
  std::shared_lock lock(mu_);
  std::vector<CollectionStats> out;
  out.reserve(collections_.size());
  for (const auto& [name, index] : collections_) {
    out.push_back(CollectionStats{name, index->dimension(), index->count()});
  }
  return out;
}

std::vector<HnswIndex*> HnswVectorStore::collections_snapshot() const {
  std::shared_lock lock(mu_);
  std::vector<HnswIndex*> out;
  for (const auto& [name, index] : collections_) out.push_back(index.get());
  return out;
}

Status HnswVectorStore::checkpoint() {
  Status first;
  for (HnswIndex* index : collections_snapshot()) {
    if (Status s = index->checkpoint(); !s.ok() && first.ok()) first = std::move(s);
  }
  return first;
}

void HnswVectorStore::start() {
  std::lock_guard lock(run_mu_);
  if (checkpointer_.joinable()) return;
  stopping_ = false;
  checkpointer_ = std::thread([this] { checkpoint_loop(); });
}

void HnswVectorStore::stop() {
  {
    std::lock_guard lock(run_mu_);
    if (!checkpointer_.joinable()) return;
    stopping_ = true;
  }
  run_cv_.notify_all();
  checkpointer_.join();
}

void HnswVectorStore::checkpoint_loop() {
  std::unique_lock lock(run_mu_);
  while (!run_cv_.wait_for(lock, options_.checkpoint_poll_interval, [this] { return stopping_; })) {
    lock.unlock();
    for (HnswIndex* index : collections_snapshot()) {
      if (index->log_bytes_since_checkpoint() < options_.checkpoint_log_bytes) continue;
      if (Status s = index->checkpoint(); !s.ok()) {
        // Logged by the index; the next round retries, and nothing acknowledged depends on it.
        continue;
      }
    }
    lock.lock();
  }
}

}  // namespace deeplens
