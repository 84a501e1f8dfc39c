// The pipeline's events as C++ values, field for field as in the spec ("Event Schemas"), plus
// ProcessingFailedEvent, which the spec leaves to us. Plain data: no I/O, no behaviour; the JSON
// mapping lives in codec.h. Optional JSON fields are std::optional so that decode(encode(x)) == x
// and absent stays absent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/clock.h"
#include "events/priority.h"

namespace deeplens {

// Fields every event carries. eventType is implied by the C++ type; eventVersion is always
// written as "1.0".
struct EventEnvelope {
  std::string event_id;                       // "evt_<uuid>"
  Timestamp timestamp;                        // UTC, ms precision
  std::string tenant_id;
  std::optional<std::string> correlation_id;  // the ImageUploadedEvent's eventId; absent on that event
  bool operator==(const EventEnvelope&) const = default;
};

struct RetryPolicy {
  int max_attempts = 3;
  int64_t backoff_ms = 1000;
  int current_attempt = 1;
  bool operator==(const RetryPolicy&) const = default;
};

struct ProcessingOptions {
  std::vector<std::string> models;
  std::optional<Priority> priority;
  std::optional<bool> skip_duplicate_check;
  std::optional<bool> generate_thumbnail;
  bool operator==(const ProcessingOptions&) const = default;
};

struct UploadedImageMetadata {
  int width = 0;
  int height = 0;
  std::string format;  // "JPEG", "PNG", ...
  std::optional<std::string> color_profile;
  std::optional<std::string> original_file_name;
  bool operator==(const UploadedImageMetadata&) const = default;
};

struct StorageProvider {
  std::string type;  // "local", "azure_blob"
  std::optional<std::string> container_name;
  std::optional<std::string> blob_name;
  bool operator==(const StorageProvider&) const = default;
};

struct ImageUploadedEvent {
  EventEnvelope envelope;
  struct Data {
    std::string image_id;
    std::string file_name;
    std::string file_path;
    int64_t file_size = 0;
    std::string content_type;
    std::optional<std::string> uploaded_by;
    UploadedImageMetadata metadata;
    StorageProvider storage_provider;
    bool operator==(const Data&) const = default;
  } data;
  ProcessingOptions processing_options;
  bool operator==(const ImageUploadedEvent&) const = default;
};

struct ExtractionOptions {
  std::optional<bool> normalize;
  std::optional<bool> return_metadata;
  std::optional<int> timeout_seconds;  // JSON "timeout"
  bool operator==(const ExtractionOptions&) const = default;
};

struct FeatureExtractionRequestedEvent {
  EventEnvelope envelope;
  struct Data {
    std::string image_id;
    std::string image_path;
    std::string model_name;
    std::optional<std::string> model_version;
    std::optional<int> expected_dimension;
    std::optional<ExtractionOptions> extraction_options;
    // The lane (events/priority.h); absent in events from before lanes, which are normal.
    std::optional<Priority> priority;
    bool operator==(const Data&) const = default;
  } data;
  RetryPolicy retry_policy;
  bool operator==(const FeatureExtractionRequestedEvent&) const = default;
};

struct VectorMetadata {
  Timestamp extraction_time;
  int64_t processing_time_ms = 0;
  std::string model_version;
  std::optional<double> confidence;
  bool operator==(const VectorMetadata&) const = default;
};

struct IndexedImageMetadata {
  int width = 0;
  int height = 0;
  std::string format;
  int64_t file_size = 0;
  bool operator==(const IndexedImageMetadata&) const = default;
};

struct VectorIndexingRequestedEvent {
  EventEnvelope envelope;
  struct Data {
    std::string image_id;
    std::string model_name;
    std::vector<float> feature_vector;
    std::optional<int> expected_dimension;  // when present, featureVector must have this length
    VectorMetadata vector_metadata;
    std::optional<IndexedImageMetadata> image_metadata;
    bool operator==(const Data&) const = default;
  } data;
  std::optional<RetryPolicy> retry_policy;  // present when the indexing step is being retried
  bool operator==(const VectorIndexingRequestedEvent&) const = default;
};

struct ProcessingStep {
  std::string step;    // "feature_extraction", "vector_indexing"
  std::string status;  // "completed", "skipped", "failed"
  int64_t duration_ms = 0;  // JSON "duration"
  std::optional<std::string> model_name;
  std::optional<std::string> collection_name;
  bool operator==(const ProcessingStep&) const = default;
};

// JSON "duplicateOf" (our addition to the spec's event): the earlier image this one nearly
// duplicates, found by the near-duplicate check after indexing.
struct DuplicateRef {
  std::string image_id;    // JSON "imageId"
  double score = 0;        // cosine similarity of the two images' vectors
  std::string model_name;  // JSON "modelName": the model whose collection found it
  bool operator==(const DuplicateRef&) const = default;
};

struct ProcessingCompletedEvent {
  EventEnvelope envelope;
  struct Data {
    std::string image_id;
    std::string status = "success";
    std::vector<ProcessingStep> processing_steps;
    int64_t total_processing_time_ms = 0;  // JSON "totalProcessingTime"
    Timestamp searchable_after;
    std::optional<DuplicateRef> duplicate_of;
    bool operator==(const Data&) const = default;
  } data;
  bool operator==(const ProcessingCompletedEvent&) const = default;
};

// A stage could not do its work. Published to deeplens.processing.failed; the retry stage
// re-publishes originalEvent to originalTopic when nextAttemptAt is due, or dead-letters it.
struct ProcessingFailedEvent {
  EventEnvelope envelope;
  struct Data {
    std::string image_id;
    std::string stage;  // "orchestration", "feature_extraction", "vector_indexing", "completion"
    std::optional<std::string> model_name;
    std::string error_code;     // UPPER_SNAKE, e.g. "EXTRACTION_FAILED"
    std::string error_message;
    int attempt = 1;
    int max_attempts = 1;
    bool retryable = false;
    std::optional<Timestamp> next_attempt_at;
    std::string original_topic;
    std::string original_event_json;  // the full original event, a JSON object (compact text)
    bool operator==(const Data&) const = default;
  } data;
  bool operator==(const ProcessingFailedEvent&) const = default;
};

using AnyEvent = std::variant<ImageUploadedEvent, FeatureExtractionRequestedEvent,
                              VectorIndexingRequestedEvent, ProcessingCompletedEvent,
                              ProcessingFailedEvent>;

}  // namespace deeplens
