// Node: the backends and stages of one DeepLens process on the embedded defaults — one SQLite
// database (metadata, outbox and event log), local blobs and the HNSW vector store under
// data_dir — plus the pipeline stages it runs. `deeplens serve`, the CLI's operator commands and
// the integration tests all assemble the system through it, so they cannot drift apart.
//
//   <data_dir>/deeplens.db   metadata + event log (SQLite WAL)
//   <data_dir>/blobs/        images and thumbnails
//   <data_dir>/vectors/      one folder per collection
//
// Start order: backends (open) -> pipeline (start_pipeline); stop() reverses it.
#pragma once

#include <filesystem>
#include <memory>

#include "blob/local/local_blob_store.h"
#include "bus/sqlite_log/sqlite_log_bus.h"
#include "common/metrics.h"
#include "pipeline/pipeline.h"
#include "store/sqlite/sqlite_metadata_store.h"
#include "vectors/hnsw/hnsw_store.h"

namespace deeplens::app {

struct NodeOptions {
  std::filesystem::path data_dir = "deeplens-data";
  PipelineOptions pipeline;
  PipelineRunOptions run;
  SqliteLogOptions bus;
  bool open_vectors = true;  // false for processes that never touch vectors (CLI operator commands)
};

class Node {
 public:
  static Result<std::unique_ptr<Node>> open(const NodeOptions& options, ModelLookup models, const Clock& clock,
                                            RandomSource& random);
  ~Node();

  // Starts (or, after stop(), restarts) the stages.
  Status start_pipeline();
  void stop();

  MetadataStore& store() { return *store_; }
  SqliteLogBus& bus() { return *bus_; }
  BlobStore& blobs() { return *blobs_; }
  VectorStore& vectors() { return *vectors_; }
  PipelineContext& context() { return *context_; }
  Pipeline* pipeline() { return pipeline_.get(); }
  Metrics& metrics() { return metrics_; }
  IdGenerator& ids() { return ids_; }

 private:
  // Gauges computed when /metrics is read: queue depth per stage, index sizes, images by status.
  void register_gauges();
  Node(const NodeOptions& options, RandomSource& random) : options_(options), ids_(random) {}

  NodeOptions options_;
  Metrics metrics_;
  IdGenerator ids_;
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteLogBus> bus_;
  std::unique_ptr<SqliteMetadataStore> store_;
  std::unique_ptr<LocalBlobStore> blobs_;
  std::unique_ptr<VectorStore> vectors_;
  std::unique_ptr<PipelineContext> context_;
  std::unique_ptr<Pipeline> pipeline_;
  bool checkpointed_ = false;  // stop() checkpoints the vectors once
};

}  // namespace deeplens::app
