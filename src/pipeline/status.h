// The status read model of one image: what GET /api/v1/images/{id}/status returns (spec,
// "Status Check API"): status, processing steps, estimatedTimeRemaining (from recent step
// durations), searchableAfter and lastUpdated.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "store/metadata_store.h"

namespace deeplens {

struct ImageStatusView {
  ImageRecord image;
  std::vector<StepRecord> steps;
  std::optional<int64_t> estimated_time_remaining_ms;  // absent when done
  Timestamp last_updated;
};

Result<ImageStatusView> load_status(MetadataStore& store, const std::string& tenant_id, const std::string& image_id);

// The spec's JSON body for a status view (camelCase; ISO-8601 times), as text and as an object
// (the real-time StatusChanged event adds its fields to it).
std::string status_json(const ImageStatusView& view);
nlohmann::ordered_json status_object(const ImageStatusView& view);

}  // namespace deeplens
