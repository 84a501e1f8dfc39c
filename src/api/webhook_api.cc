// ApiService's webhook routes (/api/v1/webhooks...): endpoints, secret rotation, test events and
// the delivery log. Secrets are generated here (CSPRNG), shown once, and stored sealed.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <variant>

#include "api/api_service.h"
#include "events/topics.h"
#include "webhooks/secret_box.h"
#include "webhooks/signature.h"
#include "webhooks/url_policy.h"

namespace deeplens::api {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

constexpr const char* kEventTypes[] = {"image.uploaded", "processing.completed", "processing.failed", "image.deleted"};

json opt_time(const std::optional<Timestamp>& t) { return t ? json(format_iso8601(*t)) : json(nullptr); }

ojson endpoint_json(const WebhookEndpoint& e) {
  ojson j;
  j["id"] = e.id;
  j["url"] = e.url;
  j["events"] = e.events;
  j["description"] = e.description;
  j["enabled"] = e.enabled;
  j["disabledReason"] = e.disabled_reason.empty() ? json(nullptr) : json(e.disabled_reason);
  j["failingSince"] = opt_time(e.failing_since);
  j["previousSecretExpiresAt"] =
      !e.previous_secret.empty() && e.previous_secret_until ? opt_time(e.previous_secret_until) : json(nullptr);
  j["createdAt"] = format_iso8601(e.created_at);
  j["updatedAt"] = format_iso8601(e.updated_at);
  j["deliveriesUrl"] = "/api/v1/webhooks/" + e.id + "/deliveries";
  return j;
}

ojson delivery_json(const WebhookDelivery& d) {
  ojson j;
  j["id"] = d.id;
  j["eventType"] = d.event_type;
  j["eventId"] = d.event_id;
  j["status"] = delivery_status_name(d.status);
  j["attemptCount"] = d.attempt_count;
  j["attempts"] = ojson::array();
  for (const auto& a : d.attempts) {
    ojson x;
    x["at"] = format_iso8601(a.at);
    x["httpStatus"] = a.http_status ? json(a.http_status) : json(nullptr);
    x["durationMs"] = a.duration_ms;
    x["error"] = a.error.empty() ? json(nullptr) : json(a.error);
    j["attempts"].push_back(std::move(x));
  }
  j["nextAttemptAt"] = d.status == DeliveryStatus::kPending ? opt_time(d.next_attempt_at) : json(nullptr);
  j["createdAt"] = format_iso8601(d.created_at);
  j["updatedAt"] = format_iso8601(d.updated_at);
  return j;
}

HttpResponse webhook_error(const Error& e) {
  if (e.code == ErrorCode::kNotFound) return error_response(404, "NOT_FOUND", e.message, e.context);
  auto reason = e.context.find("reason");
  if (reason != e.context.end()) {
    if (reason->second == "invalid_url") return error_response(400, "INVALID_URL", e.message, e.context);
    if (reason->second == "private_address") return error_response(400, "PRIVATE_ADDRESS_NOT_ALLOWED", e.message, e.context);
    if (reason->second == "unresolvable") return error_response(400, "UNRESOLVABLE_HOST", e.message, e.context);
    if (reason->second == "webhook_limit") return error_response(403, "WEBHOOK_LIMIT_REACHED", e.message, e.context);
  }
  return error_from(e);
}

// The request body as a JSON object, or the 400 that says why not.
std::variant<json, HttpResponse> json_object_body(const HttpRequest& req, bool allow_empty) {
  if (req.body.empty() && allow_empty) return json::object();
  auto j = json::parse(req.body, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return error_response(400, "INVALID_JSON", "the body must be a JSON object");
  return j;
}

// Validates "events": a non-empty array of known, distinct types.
std::variant<std::vector<std::string>, HttpResponse> parse_events(const json& v) {
  if (!v.is_array() || v.empty())
    return error_response(400, "INVALID_REQUEST", "events must be a non-empty array of event types",
                          {{"field", "events"}});
  std::vector<std::string> out;
  for (const auto& e : v) {
    if (!e.is_string())
      return error_response(400, "INVALID_REQUEST", "events must hold strings", {{"field", "events"}});
    const std::string type = e.get<std::string>();
    bool known = false;
    for (const char* k : kEventTypes) known = known || type == k;
    if (!known)
      return error_response(400, "UNKNOWN_EVENT_TYPE",
                            "unknown event type '" + type.substr(0, 100) +
                                "'; known: image.uploaded, processing.completed, processing.failed, image.deleted",
                            {{"field", "events"}, {"eventType", type.substr(0, 100)}});
    if (std::find(out.begin(), out.end(), type) == out.end()) out.push_back(type);
  }
  return out;
}

}  // namespace

void ApiService::enable_webhooks(WebhookApiContext context) { webhooks_ = std::move(context); }

std::optional<HttpResponse> ApiService::webhooks_unavailable() const {
  if (webhooks_.secrets && webhooks_.random) return std::nullopt;
  return error_response(503, "WEBHOOKS_DISABLED", "webhooks are not enabled on this server (webhooks.enabled)");
}

// A url this server will deliver to, or the 400 naming the rule it breaks.
std::optional<HttpResponse> ApiService::check_webhook_url(const std::string& url) const {
  auto parsed = webhooks::parse_webhook_url(url);
  if (!parsed) return webhook_error(parsed.error());
  if (auto st = webhooks::check_destination(*parsed, webhooks_.allow_private_networks); !st)
    return webhook_error(st.error());
  return std::nullopt;
}

HttpResponse ApiService::create_webhook(HttpRequest& req) {
  if (auto no = webhooks_unavailable()) return *no;
  auto body = json_object_body(req, false);
  if (auto* r = std::get_if<HttpResponse>(&body)) return *r;
  const json& j = std::get<json>(body);
  for (const auto& [key, _] : j.items())
    if (key != "url" && key != "events" && key != "description")
      return error_response(400, "UNKNOWN_FIELD", "unknown field '" + key.substr(0, 100) + "'; fields: url, events, description",
                            {{"field", key.substr(0, 100)}});
  if (!j.contains("url") || !j["url"].is_string())
    return error_response(400, "INVALID_URL", "url is required (a string)", {{"field", "url"}});
  const std::string url = j["url"].get<std::string>();
  if (auto bad = check_webhook_url(url)) return *bad;
  if (!j.contains("events")) return error_response(400, "INVALID_REQUEST", "events is required", {{"field", "events"}});
  auto events = parse_events(j["events"]);
  if (auto* r = std::get_if<HttpResponse>(&events)) return *r;
  std::string description;
  if (j.contains("description")) {
    if (!j["description"].is_string() || j["description"].get<std::string>().size() > 1000)
      return error_response(400, "INVALID_REQUEST", "description must be a string of at most 1000 bytes",
                            {{"field", "description"}});
    description = j["description"].get<std::string>();
  }
  const std::string secret = webhooks::generate_secret(*webhooks_.random);
  auto sealed = webhooks_.secrets->seal(secret, *webhooks_.random);
  if (!sealed) return error_from(sealed.error());
  WebhookEndpoint e;
  e.id = "wh_" + ctx_.ids.hex(12);
  e.tenant_id = req.tenant_id;
  e.url = url;
  e.events = std::get<std::vector<std::string>>(events);
  e.description = description;
  e.secret = *sealed;
  e.created_at = e.updated_at = ctx_.clock.now();
  if (auto st = ctx_.store.webhooks().create_webhook(e, webhooks_.max_per_tenant); !st) return webhook_error(st.error());
  ojson out = endpoint_json(e);
  out["secret"] = secret;  // shown once
  auto res = json_response(201, out.dump());
  res.headers.emplace_back("Location", "/api/v1/webhooks/" + e.id);
  return res;
}

HttpResponse ApiService::list_webhooks(HttpRequest& req) {
  if (auto no = webhooks_unavailable()) return *no;
  auto list = ctx_.store.webhooks().list_webhooks(req.tenant_id);
  if (!list) return webhook_error(list.error());
  ojson j;
  j["webhooks"] = ojson::array();
  for (const auto& e : *list) j["webhooks"].push_back(endpoint_json(e));
  return json_response(200, j.dump());
}

HttpResponse ApiService::get_webhook(HttpRequest& req) {
  if (auto no = webhooks_unavailable()) return *no;
  auto e = ctx_.store.webhooks().get_webhook(req.tenant_id, req.params["id"]);
  if (!e) return webhook_error(e.error());
  return json_response(200, endpoint_json(*e).dump());
}

HttpResponse ApiService::update_webhook(HttpRequest& req) {
  if (auto no = webhooks_unavailable()) return *no;
  auto body = json_object_body(req, false);
  if (auto* r = std::get_if<HttpResponse>(&body)) return *r;
  const json& j = std::get<json>(body);
  auto found = ctx_.store.webhooks().get_webhook(req.tenant_id, req.params["id"]);
  if (!found) return webhook_error(found.error());
  WebhookEndpoint e = *found;
  for (const auto& [key, value] : j.items()) {
    if (key == "url") {
      if (!value.is_string()) return error_response(400, "INVALID_URL", "url must be a string", {{"field", "url"}});
      if (auto bad = check_webhook_url(value.get<std::string>())) return *bad;
      e.url = value.get<std::string>();
    } else if (key == "events") {
      auto events = parse_events(value);
      if (auto* r = std::get_if<HttpResponse>(&events)) return *r;
      e.events = std::get<std::vector<std::string>>(events);
    } else if (key == "enabled") {
      if (!value.is_boolean())
        return error_response(400, "INVALID_REQUEST", "enabled must be true or false", {{"field", "enabled"}});
      e.enabled = value.get<bool>();
      if (e.enabled) {  // turned back on by its owner: start afresh
        e.disabled_reason.clear();
        e.failing_since.reset();
      }
    } else if (key == "description") {
      if (!value.is_string() || value.get<std::string>().size() > 1000)
        return error_response(400, "INVALID_REQUEST", "description must be a string of at most 1000 bytes",
                              {{"field", "description"}});
      e.description = value.get<std::string>();
    } else {
      return error_response(400, "UNKNOWN_FIELD",
                            "unknown field '" + key.substr(0, 100) + "'; fields: url, events, enabled, description",
                            {{"field", key.substr(0, 100)}});
    }
  }
  e.updated_at = ctx_.clock.now();
  if (auto st = ctx_.store.webhooks().update_webhook(e); !st) return webhook_error(st.error());
  if (e.enabled && webhooks_.kick) webhooks_.kick();
  return json_response(200, endpoint_json(e).dump());
}

HttpResponse ApiService::delete_webhook(HttpRequest& req) {
  if (auto no = webhooks_unavailable()) return *no;
  if (auto st = ctx_.store.webhooks().delete_webhook(req.tenant_id, req.params["id"]); !st)
    return webhook_error(st.error());
  HttpResponse res;
  res.status = 204;
  res.content_type.clear();
  return res;
}

HttpResponse ApiService::rotate_webhook_secret(HttpRequest& req) {
  if (auto no = webhooks_unavailable()) return *no;
  auto body = json_object_body(req, true);
  if (auto* r = std::get_if<HttpResponse>(&body)) return *r;
  const json& j = std::get<json>(body);
  std::chrono::seconds overlap = webhooks_.secret_overlap;
  for (const auto& [key, value] : j.items()) {
    if (key != "overlapSeconds")
      return error_response(400, "UNKNOWN_FIELD", "unknown field '" + key.substr(0, 100) + "'; fields: overlapSeconds",
                            {{"field", key.substr(0, 100)}});
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() > 7 * 86400)
      return error_response(400, "INVALID_REQUEST", "overlapSeconds must be an integer from 0 to 604800",
                            {{"field", "overlapSeconds"}});
    overlap = std::chrono::seconds(value.get<int64_t>());
  }
  auto found = ctx_.store.webhooks().get_webhook(req.tenant_id, req.params["id"]);
  if (!found) return webhook_error(found.error());
  WebhookEndpoint e = *found;
  const std::string secret = webhooks::generate_secret(*webhooks_.random);
  auto sealed = webhooks_.secrets->seal(secret, *webhooks_.random);
  if (!sealed) return error_from(sealed.error());
  const Timestamp now = ctx_.clock.now();
  e.previous_secret = overlap.count() > 0 ? e.secret : std::string();
  e.previous_secret_until = overlap.count() > 0 ? std::optional<Timestamp>(now + overlap) : std::nullopt;
  e.secret = *sealed;
  e.updated_at = now;
  if (auto st = ctx_.store.webhooks().update_webhook(e); !st) return webhook_error(st.error());
  ojson out = endpoint_json(e);
  out["secret"] = secret;
  return json_response(200, out.dump());
}

HttpResponse ApiService::test_webhook(HttpRequest& req) {
  if (auto no = webhooks_unavailable()) return *no;
  auto found = ctx_.store.webhooks().get_webhook(req.tenant_id, req.params["id"]);
  if (!found) return webhook_error(found.error());
  if (!found->enabled)
    return error_response(409, "WEBHOOK_DISABLED", "the webhook is disabled; enable it first (PATCH enabled: true)",
                          {{"id", found->id}});
  const Timestamp now = ctx_.clock.now();
  ojson event;
  event["eventId"] = ctx_.ids.event_id();
  event["eventType"] = "webhook.test";
  event["eventVersion"] = event_types::kEventVersion;
  event["timestamp"] = format_iso8601(now);
  event["tenantId"] = req.tenant_id;
  event["data"] = {{"webhookId", found->id}, {"message", "a test delivery from DeepLens"}};
  WebhookDelivery d;
  d.id = "msg_" + ctx_.ids.hex(16);
  d.endpoint_id = found->id;
  d.tenant_id = req.tenant_id;
  d.event_type = "webhook.test";
  d.event_id = event["eventId"].get<std::string>();
  d.payload = event.dump();
  d.next_attempt_at = now;
  d.created_at = d.updated_at = now;
  if (auto st = ctx_.store.webhooks().add_delivery(d); !st) return webhook_error(st.error());
  if (webhooks_.kick) webhooks_.kick();
  return json_response(202, delivery_json(d).dump());
}

HttpResponse ApiService::list_webhook_deliveries(HttpRequest& req) {
  if (auto no = webhooks_unavailable()) return *no;
  std::optional<DeliveryStatus> status;
  if (auto it = req.query.find("status"); it != req.query.end() && !it->second.empty()) {
    status = parse_delivery_status(it->second);
    if (!status)
      return error_response(400, "INVALID_REQUEST", "status must be pending, succeeded or failed", {{"field", "status"}});
  }
  auto limit_or = query_limit(req, 50, 500);
  if (auto* bad = std::get_if<HttpResponse>(&limit_or)) return *bad;
  const int limit = std::get<int>(limit_or);
  auto& store = ctx_.store.webhooks();
  if (auto e = store.get_webhook(req.tenant_id, req.params["id"]); !e) return webhook_error(e.error());
  auto page = store.list_deliveries(req.tenant_id, req.params["id"], status, limit, req.query["cursor"]);
  if (!page) return webhook_error(page.error());
  ojson j;
  j["deliveries"] = ojson::array();
  for (const auto& d : page->deliveries) j["deliveries"].push_back(delivery_json(d));
  j["nextCursor"] = page->next_cursor.empty() ? json(nullptr) : json(page->next_cursor);
  return json_response(200, j.dump());
}

HttpResponse ApiService::get_webhook_delivery(HttpRequest& req) {
  if (auto no = webhooks_unavailable()) return *no;
  auto d = ctx_.store.webhooks().get_delivery(req.tenant_id, req.params["id"], req.params["deliveryId"]);
  if (!d) return webhook_error(d.error());
  ojson j = delivery_json(*d);
  auto payload = json::parse(d->payload, nullptr, false);
  j["payload"] = payload.is_discarded() ? json(d->payload) : payload;
  return json_response(200, j.dump());
}

HttpResponse ApiService::redeliver_webhook_delivery(HttpRequest& req) {
  if (auto no = webhooks_unavailable()) return *no;
  auto& store = ctx_.store.webhooks();
  if (auto st = store.redeliver(req.tenant_id, req.params["id"], req.params["deliveryId"], ctx_.clock.now()); !st)
    return webhook_error(st.error());
  if (webhooks_.kick) webhooks_.kick();
  auto d = store.get_delivery(req.tenant_id, req.params["id"], req.params["deliveryId"]);
  if (!d) return webhook_error(d.error());
  return json_response(202, delivery_json(*d).dump());
}

}  // namespace deeplens::api
