#include "pipeline/status.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "pipeline/eta.h"

namespace deeplens {
namespace {
// The window of completions the pipeline's rate is measured over: short enough to follow a
// change of load (the startup's burst of orchestration, a second worker), long enough to hold
// a few dozen completions at a CPU model's rate.
constexpr auto kRateWindow = std::chrono::seconds(20);
}  // namespace

Priority image_priority(const ImageRecord& image) {
  const auto po = nlohmann::json::parse(image.processing_options_json, nullptr, false);
  if (po.is_object() && po.contains("priority") && po["priority"].is_string())
    return parse_priority(po["priority"].get<std::string>()).value_or(Priority::kNormal);
  return Priority::kNormal;
}

Result<int64_t> estimate_remaining_ms(MetadataStore& store, const ImageRecord& image,
                                      const std::vector<StepRecord>& steps, const StatusOptions& options) {
  auto mean = [&](const std::string& step, double fallback) {
    auto d = store.recent_step_duration_ms(step, 50);
    return d && *d ? **d : fallback;
  };
  const double fx = mean("feature_extraction", 100.0), vx = mean("vector_indexing", 10.0);
  const bool extracted = !steps.empty() && std::all_of(steps.begin(), steps.end(), [](const StepRecord& s) {
    return s.step != "feature_extraction" || s.status == StepStatus::kCompleted || s.status == StepStatus::kFailed;
  });
  if (!extracted) {
    EtaInputs in;
    in.now = options.clock ? options.clock->now() : SystemClock().now();
    auto backlog = store.extraction_backlog(image, in.now - kRateWindow);
    if (!backlog) return std::move(backlog).error();
    in.backlog = std::move(backlog).value();
    in.lane = image_priority(image);
    in.weights = options.lane_weights;
    in.extraction_ms = fx;
    in.indexing_ms = vx;
    in.models = static_cast<int>(std::max<size_t>(image.models.size(), 1));
    return estimate_waiting_ms(in);
  }
  double remaining = 0;
  for (const auto& s : steps)
    if (s.status != StepStatus::kCompleted && s.status != StepStatus::kFailed)
      remaining += s.step == "feature_extraction" ? fx : vx;
  return static_cast<int64_t>(remaining);
}

Result<ImageStatusView> load_status(MetadataStore& store, const std::string& tenant_id, const std::string& image_id,
                                    const StatusOptions& options) {
  auto image = store.get_image(tenant_id, image_id);
  if (!image) return std::move(image).error();
  auto steps = store.get_steps(image_id);
  if (!steps) return std::move(steps).error();
  ImageStatusView v;
  v.image = std::move(image).value();
  v.steps = std::move(steps).value();
  v.priority = image_priority(v.image);
  v.last_updated = v.image.updated_at;
  for (const auto& s : v.steps) {
    if (s.completed_at) v.last_updated = std::max(v.last_updated, *s.completed_at);
    if (s.started_at) v.last_updated = std::max(v.last_updated, *s.started_at);
  }
  if (v.image.status == ImageStatus::kUploaded || v.image.status == ImageStatus::kProcessing) {
    auto remaining = estimate_remaining_ms(store, v.image, v.steps, options);
    if (!remaining) return std::move(remaining).error();
    v.estimated_time_remaining_ms = *remaining;
  }
  return v;
}

nlohmann::ordered_json duplicate_json(const std::optional<DuplicateOf>& d) {
  if (!d) return nullptr;
  return {{"imageId", d->image_id}, {"score", d->score}, {"modelName", d->model}};
}

std::string status_json(const ImageStatusView& v) { return status_object(v).dump(); }

nlohmann::ordered_json status_object(const ImageStatusView& v) {
  nlohmann::ordered_json j;
  j["imageId"] = v.image.image_id;
  j["status"] = image_status_name(v.image.status);
  j["priority"] = priority_name(v.priority);
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
  j["duplicateOf"] = duplicate_json(v.image.duplicate_of);
  j["lastUpdated"] = format_iso8601(v.last_updated);
  if (v.image.status == ImageStatus::kFailed)
    j["error"] = {{"code", v.image.error_code}, {"message", v.image.error_message}};
  return j;
}

}  // namespace deeplens
