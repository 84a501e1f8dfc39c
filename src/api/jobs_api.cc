// ApiService's operator routes: the pipeline's queues and throughput (GET /api/v1/jobs), the
// tenant's failed and retrying images and their replay (/api/v1/dead-letters...), and the web UI's
// static files (GET /, /ui/{file}).
#include <nlohmann/json.hpp>

#include "api/api_service.h"
#include "api/web_assets.h"
#include "events/priority.h"
#include "pipeline/failures.h"
#include "pipeline/ingest.h"

namespace deeplens::api {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

// Throughput is the steps completed over this window (the steps table, shared by every process).
constexpr std::chrono::seconds kThroughputWindow{60};

ojson dead_letter_json(const DeadLetter& d) {
  ojson j;
  j["id"] = d.id;
  j["imageId"] = d.image_id.empty() ? json(nullptr) : json(d.image_id);
  j["stage"] = d.stage;
  j["errorCode"] = d.error_code;
  j["errorMessage"] = d.error_message;
  j["attempts"] = d.attempts;
  j["createdAt"] = format_iso8601(d.created_at);
  return j;
}

HttpResponse dead_letter_not_found(const std::string& id) {
  return error_response(404, "DEAD_LETTER_NOT_FOUND", "no dead letter '" + id + "' in this tenant", {{"id", id}});
}

}  // namespace

HttpResponse ApiService::jobs(HttpRequest& req) {
  const Timestamp now = ctx_.clock.now();
  auto activity = ctx_.store.step_activity(now - kThroughputWindow);
  if (!activity) return error_from(activity.error());
  auto failures = list_failures(ctx_, req.tenant_id, 1000, /*with_errors=*/false);  // counts only
  if (!failures) return error_from(failures.error());
  ojson j;
  j["stages"] = ojson::array();
  for (const auto& queue : stage_queues()) {
    ojson s;
    s["stage"] = queue.stage;
    s["consumerGroup"] = queue.group;
    // queued = the consumer group's lag: events on its topics it has not committed yet.
    int64_t queued = 0;
    bool known = true;
    ojson lanes = ojson::array();
    for (const auto& topic : queue.topics) {
      auto lag = bus_.lag(queue.group, {topic});
      const bool ok = lag && *lag >= 0;
      known = known && ok;
      if (ok) queued += *lag;
      if (queue.laned())
        lanes.push_back(ojson{{"lane", priority_name(lane_of(topic))}, {"queued", ok ? json(*lag) : json(nullptr)}});
    }
    s["queued"] = known ? json(queued) : json(nullptr);
    if (queue.laned()) s["lanes"] = lanes;
    if (*queue.step) {
      s["step"] = queue.step;
      int64_t running = 0, completed = 0;
      for (const auto& a : *activity)
        if (a.step == queue.step) running = a.running, completed = a.completed;
      s["inFlight"] = running;
      s["completedLastMinute"] = completed;
      s["perSecond"] = static_cast<double>(completed) / static_cast<double>(kThroughputWindow.count());
    }
    j["stages"].push_back(std::move(s));
  }
  j["deadLetters"] = failures->dead_letters.size();
  j["retrying"] = failures->retrying.size();
  j["throughputWindowSeconds"] = kThroughputWindow.count();
  return json_response(200, j.dump());
}

HttpResponse ApiService::list_dead_letters(HttpRequest& req) {
  auto limit_or = query_limit(req, 100, 1000);
  if (auto* bad = std::get_if<HttpResponse>(&limit_or)) return *bad;
  auto failures = list_failures(ctx_, req.tenant_id, std::get<int>(limit_or));
  if (!failures) return error_from(failures.error());
  ojson j;
  j["deadLetters"] = ojson::array();
  for (const auto& d : failures->dead_letters) j["deadLetters"].push_back(dead_letter_json(d));
  j["retrying"] = ojson::array();
  for (const auto& r : failures->retrying) {
    ojson x;
    x["imageId"] = r.image_id;
    x["stage"] = r.stage;
    x["model"] = r.model.empty() ? json(nullptr) : json(r.model);
    x["attempt"] = r.attempt;
    x["maxAttempts"] = r.max_attempts;
    x["nextAttemptAt"] = format_iso8601(r.next_attempt_at);
    x["lastError"] = r.last_error.empty() ? json(nullptr) : json(r.last_error);
    j["retrying"].push_back(std::move(x));
  }
  return json_response(200, j.dump());
}

HttpResponse ApiService::replay_dead_letter(HttpRequest& req) {
  const std::string& raw = req.params["id"];
  int64_t id = 0;
  const bool numeric = !raw.empty() && raw.size() <= 18 && raw.find_first_not_of("0123456789") == std::string::npos;
  if (numeric) id = std::stoll(raw);
  if (id <= 0) return dead_letter_not_found(raw);
  auto letter = ctx_.store.get_dead_letter(id);
  if (!letter && letter.error().code == ErrorCode::kNotFound) return dead_letter_not_found(raw);
  if (!letter) return error_from(letter.error());
  if (letter->tenant_id != req.tenant_id) return dead_letter_not_found(raw);  // another tenant's: not here
  if (auto st = deeplens::replay_dead_letter(ctx_, id); !st) {
    if (st.error().code == ErrorCode::kFailedPrecondition)
      return error_response(409, "ALREADY_REPLAYED", "dead letter " + raw + " was already replayed", {{"id", raw}});
    return error_from(st.error());
  }
  ojson j;
  j["id"] = id;
  j["imageId"] = letter->image_id;
  j["replayed"] = true;
  return json_response(200, j.dump());
}

HttpResponse ApiService::replay_dead_letters(HttpRequest& req) {
  auto outcome = deeplens::replay_dead_letters(ctx_, req.tenant_id);
  if (!outcome) return error_from(outcome.error());
  ojson j;
  j["replayed"] = outcome->replayed;
  j["failed"] = ojson::array();
  for (const auto& [id, error] : outcome->failed) j["failed"].push_back(ojson{{"id", id}, {"error", error.message}});
  return json_response(200, j.dump());
}

HttpResponse ApiService::web_ui(HttpRequest& req) {
  const std::string name = req.path == "/" ? "index.html" : req.params["file"];
  const WebAsset* asset = find_web_asset(name);
  if (!asset) return error_response(404, "NOT_FOUND", "no file '" + name + "' in the web UI", {{"file", name}});
  HttpResponse res;
  res.headers = {{"Content-Security-Policy", kWebUiContentSecurityPolicy},
                 {"Referrer-Policy", "no-referrer"},
                 {"Cache-Control", "no-cache"},  // revalidated by ETag: a new binary serves its new UI
                 {"ETag", asset->etag}};
  if (req.header("if-none-match") == asset->etag) {
    res.status = 304;
    res.content_type.clear();
    return res;
  }
  res.content_type = asset->content_type;
  res.body = std::string(asset->bytes);
  return res;
}

}  // namespace deeplens::api
