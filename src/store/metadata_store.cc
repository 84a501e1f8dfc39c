#include "store/metadata_store.h"

namespace deeplens {

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
