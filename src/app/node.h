// Node: the backends and stages of one DeepLens process — one SQLite database (metadata, outbox
// and, in embedded mode, the event log), blobs (local files or Azure) and the HNSW vector store under data_dir —
// plus the pipeline stages it runs. `deeplens serve|api|worker`, the operator commands and the
// integration tests all assemble the system through it, so they cannot drift apart.
//
//   <data_dir>/deeplens.db   metadata + outbox (+ event log when embedded), SQLite WAL
//   <data_dir>/blobs/        images and thumbnails (local blobs)
//   <data_dir>/spool/        uploads being received (and Azure uploads before they are sent)
//   <data_dir>/vectors/      one folder per collection (one process at a time: see open_vectors)
//
// Bus: embedded (the sqlite_log in the same database; an event is appended in the transaction that
// causes it) or Kafka (events go to the outbox table; the OutboxRelay publishes them, in the
// processes that run it).
// Start order: backends (open) -> relay -> pipeline; stop() reverses it.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>

#include "blob/azure/azure_blob_store.h"
#include "blob/local/local_blob_store.h"
#include "bus/kafka/kafka_bus.h"
#include "bus/sqlite_log/sqlite_log_bus.h"
#include "pipeline/outbox_relay.h"
#include "common/metrics.h"
#include "pipeline/pipeline.h"
#include "pipeline/sweeper.h"
#include "store/sqlite/sqlite_metadata_store.h"
#include "vectors/hnsw/hnsw_store.h"
#include "vectors/qdrant/qdrant_vector_store.h"

namespace deeplens::app {

struct NodeOptions {
  std::filesystem::path data_dir = "deeplens-data";
  PipelineOptions pipeline;
  PipelineRunOptions run;
  SqliteLogOptions bus;
  // Kafka instead of the embedded log when bootstrap_servers is set (config bus.url kafka://...).
  std::optional<KafkaBusOptions> kafka;
  // PostgreSQL instead of the SQLite file for metadata + outbox (config metadata.url
  // postgresql://...); needs the Kafka bus (the embedded log lives in SQLite).
  std::string postgres_url;
  // Azure Blob Storage instead of data_dir/blobs (config blobs.url); then nothing a worker needs
  // from another process lives on this host's disk.
  std::optional<AzureBlobOptions> azure_blobs;
  // Qdrant instead of the embedded HNSW index (config vectors.url qdrant+http://...): shared by
  // every process, so each api serves search and each worker may run the index stage.
  std::optional<QdrantOptions> qdrant;
  HnswOptions hnsw;  // the embedded index (without qdrant)
  bool run_relay = true;     // publish the outbox (Kafka only); every process with stages does
  bool connect_bus = true;   // false: metadata only (operator commands); events stay in the outbox
  // The HNSW store is single-process (it locks its folder): only the process that runs the index
  // stage (and serves search) opens it; false for CLI operator commands and extract-only workers.
  bool open_vectors = true;
  // Orphan sweeping (blobs, vectors, spool files), in processes that serve HTTP; none when absent.
  std::optional<SweeperOptions> sweeper;
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
  EventBus& bus() { return *bus_; }
  // The embedded log (nullptr on Kafka): retention and storage figures.
  SqliteLogBus* log_bus() { return log_bus_.get(); }
  BlobStore& blobs() { return *blobs_; }
  VectorStore& vectors() { return *vectors_; }
  PipelineContext& context() { return *context_; }
  Pipeline* pipeline() { return pipeline_.get(); }
  Sweeper* sweeper() { return sweeper_.get(); }
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
  std::unique_ptr<SqliteLogBus> log_bus_;
  std::unique_ptr<KafkaBus> kafka_bus_;
  EventBus* bus_ = nullptr;
  std::unique_ptr<MetadataStore> store_;
  std::unique_ptr<OutboxRelay> relay_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<VectorStore> vectors_;
  std::unique_ptr<PipelineContext> context_;
  std::unique_ptr<Pipeline> pipeline_;
  std::unique_ptr<Sweeper> sweeper_;
  bool checkpointed_ = false;  // stop() checkpoints the vectors once
};

}  // namespace deeplens::app
