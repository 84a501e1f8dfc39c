#include "store/metadata_store.h"

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
