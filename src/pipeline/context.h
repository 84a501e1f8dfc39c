// What every stage works with: the backends (through their interfaces only), the models, time,
// ids and metrics, and the pipeline's policy settings. Owned by app/; every reference must outlive
// the stages.
#pragma once

#include <array>
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "blob/blob_store.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "events/events.h"
#include "features/extractor.h"
#include "imaging/image.h"
#include "store/metadata_store.h"
#include "vectors/vector_index.h"

namespace deeplens {

struct PipelineOptions {
  RetryPolicy retry{3, 1000, 1};     // pipeline.max_attempts, pipeline.backoff_ms
  int extraction_timeout_s = 30;     // extractionOptions.timeout
  int thumbnail_edge = 256;          // thumbnails' long edge in pixels
  ImageLimits limits;                // decoding limits (same as upload)
  std::chrono::hours processed_ttl{24 * 7};  // how long redelivery markers are kept
  // pipeline.priority_weights: shares of the high, normal and low lanes where images wait
  // (orchestration and extraction); each >= 1.
  std::array<int, 3> lane_weights{6, 3, 1};
  // Per model: the near-duplicate check's threshold (models[].duplicate_threshold); a model that
  // is absent or 0 has no check.
  std::map<std::string, double> duplicate_thresholds;
};

// Looks up a model by name; nullptr when unknown.
using ModelLookup = std::function<Extractor*(const std::string& name)>;

struct PipelineContext {
  MetadataStore& store;
  BlobStore& blobs;
  VectorStore& vectors;
  ModelLookup models;
  const Clock& clock;
  IdGenerator& ids;
  Metrics& metrics;
  PipelineOptions options;
};

// Consumer group names, one per stage (stable: offsets and idempotency markers are keyed by them).
namespace groups {
inline constexpr const char* kOrchestrator = "deeplens.orchestrator";
inline constexpr const char* kThumbnailer = "deeplens.thumbnailer";
inline constexpr const char* kExtractor = "deeplens.extractor";
inline constexpr const char* kIndexer = "deeplens.indexer";
inline constexpr const char* kNotifier = "deeplens.notifier";
inline constexpr const char* kRetry = "deeplens.retry";
}  // namespace groups

// What each stage consumes: its consumer group, the step it records (empty: none), and its topics
// (a stage with priority lanes lists its three lane topics, highest first). One table for the
// queue-depth gauges (/metrics) and the jobs API.
struct StageQueue {
  const char* stage;  // "orchestrate", "thumbnail", "extract", "index", "notify", "retry"
  const char* group;
  const char* step;   // the steps table's name of its work, or ""
  std::vector<std::string> topics;
  bool laned() const { return topics.size() == kPriorities.size(); }
};
const std::vector<StageQueue>& stage_queues();

}  // namespace deeplens
