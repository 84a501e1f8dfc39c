// HnswVectorStore: the embedded VectorStore, one HnswIndex per collection under a root directory
// (<root>/<collection>/, layout and durability in hnsw_index.h).
//
// open() takes an exclusive lock on <root>/LOCK (flock; released by the kernel if the process
// dies, so a crashed store reopens at once) and reopens every collection found under root,
// replaying their logs; a collection that cannot be opened fails open() rather than being
// silently left out of search. Collections live until the store is destroyed: the VectorIndex*
// handed out stays valid for the store's lifetime.
//
// Background checkpoints: start() runs one thread that snapshots any collection whose log has
// grown past HnswOptions::checkpoint_log_bytes; stop() (and the destructor) joins it. Without
// start() the logs only shrink on checkpoint(), which app/ calls on clean shutdown.
// Thread-safety: every method may be called concurrently.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "vectors/hnsw/hnsw_index.h"
#include "vectors/vector_index.h"

namespace deeplens {

class HnswVectorStore final : public VectorStore {
 public:
  // Opens (creating if needed) the store at root.
  static Result<std::unique_ptr<HnswVectorStore>> open(const std::string& root, HnswOptions options = {});
  ~HnswVectorStore() override;
  HnswVectorStore(const HnswVectorStore&) = delete;
  HnswVectorStore& operator=(const HnswVectorStore&) = delete;

  // Collection names are what collection_name() produces: 1-200 characters of [a-z0-9_~-]
  // (anything else is kInvalidArgument, which also keeps names safe as directory names).
  Result<VectorIndex*> open_collection(const std::string& name, size_t dimension) override;
  Result<VectorIndex*> lookup_collection(const std::string& name) override;
  std::vector<CollectionStats> stats() const override;
  // Checkpoints every collection; the first error is returned after trying them all.
  Status checkpoint() override;

  // Starts / stops the background checkpointer (idempotent).
  void start();
  void stop();

  const std::string& root() const { return root_; }

 private:
  HnswVectorStore(std::string root, HnswOptions options, int lock_fd);
  std::vector<HnswIndex*> collections_snapshot() const;
  void checkpoint_loop();

  const std::string root_;
  const HnswOptions options_;
  const int lock_fd_;

  mutable std::shared_mutex mu_;  // guards collections_ (the map, not the indexes)
  std::map<std::string, std::unique_ptr<HnswIndex>> collections_;

  std::mutex run_mu_;
  std::condition_variable run_cv_;
  bool stopping_ = false;  // guarded by run_mu_
  std::thread checkpointer_;
};

}  // namespace deeplens
