#include "store/webhook_store.h"

#include <nlohmann/json.hpp>
#include <sstream>

namespace deeplens {

const char* delivery_status_name(DeliveryStatus s) {
  switch (s) {
    case DeliveryStatus::kPending: return "pending";
    case DeliveryStatus::kSucceeded: return "succeeded";
    case DeliveryStatus::kFailed: return "failed";
  }
  return "pending";
}

std::optional<DeliveryStatus> parse_delivery_status(std::string_view s) {
  if (s == "pending") return DeliveryStatus::kPending;
  if (s == "succeeded") return DeliveryStatus::kSucceeded;
  if (s == "failed") return DeliveryStatus::kFailed;
  return std::nullopt;
}

std::string webhook_events_column(const std::vector<std::string>& events) {
  std::string out = " ";
  for (const auto& e : events) out += e + " ";
  return out;
}

std::vector<std::string> webhook_events_from_column(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string e; in >> e;) out.push_back(e);
  return out;
}

std::string delivery_attempts_to_json(const std::vector<DeliveryAttempt>& attempts) {
  auto j = nlohmann::json::array();
  for (const auto& a : attempts)
    j.push_back({{"at", a.at.time_since_epoch().count()},
                 {"httpStatus", a.http_status},
                 {"durationMs", a.duration_ms},
                 {"error", a.error}});
  return j.dump();
}

std::vector<DeliveryAttempt> delivery_attempts_from_json(const std::string& text) {
  std::vector<DeliveryAttempt> out;
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_array()) return out;
  for (const auto& a : j) {
    if (!a.is_object()) continue;
    DeliveryAttempt d;
    d.at = Timestamp(std::chrono::milliseconds(a.value("at", int64_t{0})));
    d.http_status = a.value("httpStatus", 0);
    d.duration_ms = a.value("durationMs", int64_t{0});
    d.error = a.value("error", std::string());
    out.push_back(std::move(d));
  }
  return out;
}

std::string delivery_cursor(const WebhookDelivery& d) {
  return std::to_string(d.created_at.time_since_epoch().count()) + ":" + d.id;
}

Result<std::pair<int64_t, std::string>> parse_delivery_cursor(const std::string& cursor) {
  const auto colon = cursor.find(':');
  auto bad = [&] { return Error(ErrorCode::kInvalidArgument, "cursor is not one this API returned").with("cursor", cursor); };
  if (colon == std::string::npos || colon == 0 || colon + 1 >= cursor.size()) return bad();
  int64_t ms = 0;
  for (size_t i = 0; i < colon; ++i) {
    if (cursor[i] < '0' || cursor[i] > '9' || ms > (INT64_MAX - 9) / 10) return bad();
    ms = ms * 10 + (cursor[i] - '0');
  }
  return std::make_pair(ms, cursor.substr(colon + 1));
}

}  // namespace deeplens
