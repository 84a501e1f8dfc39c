#include "pipeline/status.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace deeplens {

Result<ImageStatusView> load_status(MetadataStore& store, const std::string& tenant_id, const std::string& image_id) {
  auto image = store.get_image(tenant_id, image_id);
  if (!image) return std::move(image).error();
  auto steps = store.get_steps(image_id);
  if (!steps) return std::move(steps).error();
  ImageStatusView v;
  v.image = std::move(image).value();
  v.steps = std::move(steps).value();
  v.last_updated = v.image.updated_at;
  for (const auto& s : v.steps) {
    if (s.completed_at) v.last_updated = std::max(v.last_updated, *s.completed_at);
    if (s.started_at) v.last_updated = std::max(v.last_updated, *s.started_at);
  }
  if (v.image.status == ImageStatus::kUploaded || v.image.status == ImageStatus::kProcessing) {
    // Remaining steps times the recent mean duration of each kind (100 ms when nothing is known).
    int64_t remaining = 0;
    auto mean = [&](const std::string& step) -> double {
      auto d = store.recent_step_duration_ms(step, 50);
      return d && *d ? **d : 100.0;
    };
    const double fx = mean("feature_extraction"), vx = mean("vector_indexing");
    if (v.steps.empty()) {
      remaining = static_cast<int64_t>(static_cast<double>(std::max<size_t>(1, v.image.models.size())) * (fx + vx));
    } else {
      for (const auto& s : v.steps)
        if (s.status != StepStatus::kCompleted && s.status != StepStatus::kFailed)
          remaining += static_cast<int64_t>(s.step == "feature_extraction" ? fx : vx);
    }
    v.estimated_time_remaining_ms = remaining;
  }
  return v;
}

std::string status_json(const ImageStatusView& v) { return status_object(v).dump(); }

nlohmann::ordered_json status_object(const ImageStatusView& v) {
  nlohmann::ordered_json j;
  j["imageId"] = v.image.image_id;
  j["status"] = image_status_name(v.image.status);
  nlohmann::ordered_json steps = nlohmann::ordered_json::array();
  for (const auto& s : v.steps) {
    nlohmann::ordered_json step;
    step["step"] = s.step;
    step["modelName"] = s.model;
    step["status"] = step_status_name(s.status);
    step["attempts"] = s.attempts;
    if (s.started_at) step["startedAt"] = format_iso8601(*s.started_at);
    if (s.completed_at) step["completedAt"] = format_iso8601(*s.completed_at);
    if (s.duration_ms) step["duration"] = *s.duration_ms;
    if (!s.collection_name.empty()) step["collectionName"] = s.collection_name;
    if (!s.last_error.empty()) step["lastError"] = s.last_error;
    steps.push_back(std::move(step));
  }
  j["processingSteps"] = std::move(steps);
  if (v.estimated_time_remaining_ms) j["estimatedTimeRemaining"] = *v.estimated_time_remaining_ms;
  else j["estimatedTimeRemaining"] = nullptr;
  if (v.image.searchable_after) j["searchableAfter"] = format_iso8601(*v.image.searchable_after);
  else j["searchableAfter"] = nullptr;
  j["lastUpdated"] = format_iso8601(v.last_updated);
  if (v.image.status == ImageStatus::kFailed)
    j["error"] = {{"code", v.image.error_code}, {"message", v.image.error_message}};
  return j;
}

}  // namespace deeplens
