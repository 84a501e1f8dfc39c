#include "store/metadata_store.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace deeplens {

std::string headers_to_json(const Headers& h) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& [k, v] : h) j.push_back({k, v});
  return j.dump();
}

Headers headers_from_json(const std::string& text) {
  Headers h;
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_array()) return h;
  for (const auto& kv : j)
    if (kv.is_array() && kv.size() == 2 && kv[0].is_string() && kv[1].is_string())
      h.emplace_back(kv[0].get<std::string>(), kv[1].get<std::string>());
  return h;
}

Status check_quota(const ImageRecord& image, const StorageQuota& quota, int64_t image_count, int64_t bytes_stored) {
  if (quota.max_images > 0 && image_count + 1 > quota.max_images)
    return Error(ErrorCode::kResourceExhausted, "the tenant stores " + std::to_string(image_count) +
                                                    " images, its limit; delete some or raise the limit")
        .with("reason", "quota_images")
        .with("limit", std::to_string(quota.max_images))
        .with("tenantId", image.tenant_id);
  if (quota.max_bytes > 0 && bytes_stored + image.file_size > quota.max_bytes)
    return Error(ErrorCode::kResourceExhausted, "storing this image (" + std::to_string(image.file_size) +
                                                    " bytes) would cross the tenant's limit of " +
                                                    std::to_string(quota.max_bytes) + " bytes (" +
                                                    std::to_string(bytes_stored) + " stored)")
        .with("reason", "quota_bytes")
        .with("limit", std::to_string(quota.max_bytes))
        .with("tenantId", image.tenant_id);
  return {};
}

double RateBucket::take(double rate, double burst, int64_t now_ms) {
  if (now_ms > updated_ms) {
    tokens = std::min(burst, tokens + static_cast<double>(now_ms - updated_ms) / 1000.0 * rate);
    updated_ms = now_ms;
  }
  tokens = std::min(tokens, burst);  // the limit may have been lowered
  if (tokens >= 1.0) {
    tokens -= 1.0;
    return 0;
  }
  return rate > 0 ? (1.0 - tokens) / rate : 3600.0;
}

const char* image_status_name(ImageStatus s) {
  switch (s) {
    case ImageStatus::kUploaded: return "uploaded";
    case ImageStatus::kProcessing: return "processing";
    case ImageStatus::kCompleted: return "completed";
    case ImageStatus::kFailed: return "failed";
  }
  return "uploaded";
}

std::optional<ImageStatus> parse_image_status(std::string_view s) {
  if (s == "uploaded") return ImageStatus::kUploaded;
  if (s == "processing") return ImageStatus::kProcessing;
  if (s == "completed") return ImageStatus::kCompleted;
  if (s == "failed") return ImageStatus::kFailed;
  return std::nullopt;
}

const char* step_status_name(StepStatus s) {
  switch (s) {
    case StepStatus::kPending: return "pending";
    case StepStatus::kRunning: return "running";
    case StepStatus::kCompleted: return "completed";
    case StepStatus::kFailed: return "failed";
  }
  return "pending";
}

}  // namespace deeplens
