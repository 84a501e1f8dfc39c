// The status read model of one image: what GET /api/v1/images/{id}/status returns (spec,
// "Status Check API"): status, priority, processing steps, estimatedTimeRemaining (from the
// extraction queue ahead of the image and recent step durations), searchableAfter and lastUpdated.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <array>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "events/priority.h"
#include "store/metadata_store.h"

namespace deeplens {

struct ImageStatusView {
  ImageRecord image;
  Priority priority = Priority::kNormal;  // processingOptions.priority
  std::vector<StepRecord> steps;
  std::optional<int64_t> estimated_time_remaining_ms;  // absent when done
  Timestamp last_updated;
};

struct StatusOptions {
  std::array<int, 3> lane_weights{6, 3, 1};  // pipeline.priority_weights (for the estimates)
  const Clock* clock = nullptr;              // nullptr: the system clock
};

Result<ImageStatusView> load_status(MetadataStore& store, const std::string& tenant_id, const std::string& image_id,
                                    const StatusOptions& options = {});

// Milliseconds until `image` (not yet completed or failed) is done: the lane estimate
// (pipeline/eta.h) while it waits for extraction, else the mean durations of its unfinished steps.
Result<int64_t> estimate_remaining_ms(MetadataStore& store, const ImageRecord& image,
                                      const std::vector<StepRecord>& steps, const StatusOptions& options = {});

// processingOptions.priority of a stored image (normal when absent).
Priority image_priority(const ImageRecord& image);

// The spec's JSON body for a status view (camelCase; ISO-8601 times), as text and as an object
// (the real-time StatusChanged event adds its fields to it).
std::string status_json(const ImageStatusView& view);
nlohmann::ordered_json status_object(const ImageStatusView& view);
// {"imageId", "score", "modelName"}, or null: the "duplicateOf" of the status and image records.
nlohmann::ordered_json duplicate_json(const std::optional<DuplicateOf>& duplicate);

}  // namespace deeplens
