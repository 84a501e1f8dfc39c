// processingOptions.priority (spec: "high, normal, low") and the lanes it selects.
//
// The two stages where images wait, orchestration (images.uploaded) and extraction
// (features.extraction), have one topic per priority: the spec's name is the normal lane, and
// ".high" / ".low" are appended for the others. An event names its lane by its own content
// (ImageUploaded: processingOptions.priority; FeatureExtractionRequested: data.priority), so a
// retry, a replayed dead letter and a redelivery all re-enter the lane they came from.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace deeplens {

enum class Priority { kHigh, kNormal, kLow };

inline constexpr std::array<Priority, 3> kPriorities = {Priority::kHigh, Priority::kNormal, Priority::kLow};

inline const char* priority_name(Priority p) {
  switch (p) {
    case Priority::kHigh: return "high";
    case Priority::kLow: return "low";
    case Priority::kNormal: break;
  }
  return "normal";
}

inline std::optional<Priority> parse_priority(std::string_view s) {
  for (Priority p : kPriorities)
    if (s == priority_name(p)) return p;
  return std::nullopt;
}

// The lane topic of `base` for priority p: base itself for normal, base + ".high" / ".low".
inline std::string lane_topic(std::string_view base, Priority p) {
  if (p == Priority::kNormal) return std::string(base);
  return std::string(base) + "." + priority_name(p);
}

// Every lane topic of `base`, highest priority first.
inline std::vector<std::string> lane_topics(std::string_view base) {
  std::vector<std::string> out;
  for (Priority p : kPriorities) out.push_back(lane_topic(base, p));
  return out;
}

// The lane a topic is (normal unless it ends in ".high" or ".low").
inline Priority lane_of(std::string_view topic) {
  const auto dot = topic.rfind('.');
  if (dot == std::string_view::npos) return Priority::kNormal;
  const std::string_view tail = topic.substr(dot + 1);
  if (tail == "high") return Priority::kHigh;
  if (tail == "low") return Priority::kLow;
  return Priority::kNormal;
}

// The spec's topic a lane topic belongs to.
inline std::string_view base_topic(std::string_view topic) {
  if (lane_of(topic) == Priority::kNormal) return topic;
  return topic.substr(0, topic.rfind('.'));
}

}  // namespace deeplens
