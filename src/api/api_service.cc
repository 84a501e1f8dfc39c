#include "api/api_service.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "api/multipart.h"
#include "api/push_feed.h"
#include "api/route_match.h"
#include "common/log.h"
#include "common/sha256.h"
#include "pipeline/delete.h"
#include "pipeline/ingest.h"
#include "pipeline/search.h"
#include "pipeline/status.h"

namespace deeplens::api {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

std::string image_url(const std::string& id) { return "/api/v1/images/" + id; }

ojson image_json(const ImageRecord& r) {
  ojson j;
  j["imageId"] = r.image_id;
  j["fileName"] = r.file_name;
  j["contentType"] = r.content_type;
  j["fileSize"] = r.file_size;
  j["width"] = r.width;
  j["height"] = r.height;
  j["format"] = r.format;
  j["colorProfile"] = r.color_profile;
  j["sha256"] = r.sha256;
  if (!r.uploaded_by.empty()) j["uploadedBy"] = r.uploaded_by;
  j["status"] = image_status_name(r.status);
  j["models"] = r.models;
  j["createdAt"] = format_iso8601(r.created_at);
  j["updatedAt"] = format_iso8601(r.updated_at);
  j["searchableAfter"] = r.searchable_after ? json(format_iso8601(*r.searchable_after)) : json(nullptr);
  j["duplicateOf"] = duplicate_json(r.duplicate_of);
  j["contentUrl"] = image_url(r.image_id) + "/content";
  j["thumbnailUrl"] = r.thumbnail_path.empty() ? json(nullptr) : json(image_url(r.image_id) + "/thumbnail");
  j["statusCheckUrl"] = image_url(r.image_id) + "/status";
  return j;
}

HttpResponse not_found_image(const std::string& id) {
  return error_response(404, "IMAGE_NOT_FOUND", "no image '" + id + "' in this tenant", {{"imageId", id}});
}

// inline; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded> (RFC 6266 / 8187).
std::string content_disposition(const std::string& file_name) {
  std::string ascii, encoded;
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : file_name) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                       c == '-' || c == '_';
    ascii += (plain || c == ' ') ? static_cast<char>(c) : '_';
    if (plain) {
      encoded += static_cast<char>(c);
    } else {
      encoded += '%';
      encoded += kHex[c >> 4];
      encoded += kHex[c & 0xf];
    }
  }
  return "inline; filename=\"" + ascii + "\"; filename*=UTF-8''" + encoded;
}

std::string human_estimate(double ms) {
  const int low = std::max(1, static_cast<int>(ms / 1000.0 + 0.5));
  return std::to_string(low) + "-" + std::to_string(low * 3) + " seconds";
}

}  // namespace

// The route table: one place, used by the server and by `deeplens routes` (the OpenAPI check).
struct RouteSpec {
  const char* method;
  const char* pattern;
  bool spool;
  bool auth;
  const char* name;
  HttpResponse (ApiService::*fn)(HttpRequest&);
  RunOn run_on = RunOn::kPool;  // where the server runs the handler (a search by image: kQueries)
};

const RouteSpec kRouteSpecs[] = {
    {"POST", "/api/v1/images/upload", true, true, "upload", &ApiService::upload},
    {"GET", "/api/v1/images", false, true, "list_images", &ApiService::list_images},
    {"GET", "/api/v1/images/{id}", false, true, "get_image", &ApiService::get_image},
    {"DELETE", "/api/v1/images/{id}", false, true, "delete_image", &ApiService::delete_image},
    {"GET", "/api/v1/images/{id}/status", false, true, "status", &ApiService::status},
    {"GET", "/api/v1/images/{id}/content", false, true, "get_content", &ApiService::get_content},
    {"GET", "/api/v1/images/{id}/thumbnail", false, true, "get_thumbnail", &ApiService::get_thumbnail},
    {"POST", "/api/v1/search", true, true, "search", &ApiService::search},
    {"GET", "/healthz", false, false, "healthz", &ApiService::healthz, RunOn::kInline},
    {"GET", "/readyz", false, false, "readyz", &ApiService::readyz},
    {"GET", "/metrics", false, false, "metrics", &ApiService::metrics, RunOn::kInline},
    // Authenticated by the upgrade's headers or, for browsers, by the first message (admit()).
    {"GET", "/api/v1/ws", false, false, "websocket", &ApiService::websocket},
    {"GET", "/api/v1/events", false, true, "events", &ApiService::events},
    {"POST", "/api/v1/webhooks", false, true, "create_webhook", &ApiService::create_webhook},
    {"GET", "/api/v1/webhooks", false, true, "list_webhooks", &ApiService::list_webhooks},
    {"GET", "/api/v1/webhooks/{id}", false, true, "get_webhook", &ApiService::get_webhook},
    {"PATCH", "/api/v1/webhooks/{id}", false, true, "update_webhook", &ApiService::update_webhook},
    {"DELETE", "/api/v1/webhooks/{id}", false, true, "delete_webhook", &ApiService::delete_webhook},
    {"POST", "/api/v1/webhooks/{id}/rotate-secret", false, true, "rotate_webhook_secret",
     &ApiService::rotate_webhook_secret},
    {"POST", "/api/v1/webhooks/{id}/test", false, true, "test_webhook", &ApiService::test_webhook},
    {"GET", "/api/v1/webhooks/{id}/deliveries", false, true, "list_webhook_deliveries",
     &ApiService::list_webhook_deliveries},
    {"GET", "/api/v1/webhooks/{id}/deliveries/{deliveryId}", false, true, "get_webhook_delivery",
     &ApiService::get_webhook_delivery},
    {"POST", "/api/v1/webhooks/{id}/deliveries/{deliveryId}/redeliver", false, true, "redeliver_webhook_delivery",
     &ApiService::redeliver_webhook_delivery},
    {"GET", "/api/v1/jobs", false, true, "jobs", &ApiService::jobs},
    {"GET", "/api/v1/dead-letters", false, true, "list_dead_letters", &ApiService::list_dead_letters},
    {"POST", "/api/v1/dead-letters/replay", false, true, "replay_dead_letters", &ApiService::replay_dead_letters},
    {"POST", "/api/v1/dead-letters/{id}/replay", false, true, "replay_dead_letter", &ApiService::replay_dead_letter},
    // The web UI: static files, public (it signs in with an API key of its own).
    {"GET", "/", false, false, "web_ui", &ApiService::web_ui, RunOn::kInline},
    {"GET", "/ui/{file}", false, false, "web_ui", &ApiService::web_ui, RunOn::kInline},
};

std::vector<std::pair<std::string, std::string>> ApiService::route_table() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& r : kRouteSpecs) out.emplace_back(r.method, r.pattern);
  return out;
}

HttpResponse error_from(const Error& e) {
  std::map<std::string, std::string> details = e.context;
  auto reason = e.context.find("reason");
  if (reason != e.context.end()) {
    const auto& r = reason->second;
    if (r == "empty") return error_response(400, "EMPTY_FILE", e.message, details);
    if (r == "not_an_image") return error_response(415, "NOT_AN_IMAGE", e.message, details);
    if (r == "unsupported_format") return error_response(415, "UNSUPPORTED_FORMAT", e.message, details);
    if (r == "too_large") return error_response(413, "FILE_TOO_LARGE", e.message, details);
    if (r == "too_many_pixels" || r == "edge_too_long") return error_response(413, "IMAGE_TOO_LARGE", e.message, details);
    if (r == "corrupt") return error_response(400, "CORRUPT_IMAGE", e.message, details);
    if (r == "quota_images" || r == "quota_bytes") return error_response(403, "QUOTA_EXCEEDED", e.message, details);
    if (r == "busy") {
      HttpResponse res = error_response(503, "SERVER_BUSY", e.message, details);
      res.headers.emplace_back("Retry-After", "1");
      return res;
    }
  }
  switch (e.code) {
    case ErrorCode::kInvalidArgument: return error_response(400, "INVALID_REQUEST", e.message, details);
    case ErrorCode::kNotFound: return error_response(404, "NOT_FOUND", e.message, details);
    case ErrorCode::kFailedPrecondition: return error_response(409, "CONFLICT", e.message, details);
    case ErrorCode::kResourceExhausted: return error_response(413, "TOO_LARGE", e.message, details);
    case ErrorCode::kUnauthenticated: return error_response(401, "UNAUTHENTICATED", e.message, details);
    case ErrorCode::kUnavailable:
    case ErrorCode::kTimeout: {
      // A backend the server depends on: the client learns which service is down, not its address
      // or account (those go to the log).
      if (const auto service = e.context.find("service"); service != e.context.end()) {
        const bool blobs = service->second == "blobs";
        if (blobs || service->second == "vectors") {
          log_warn(blobs ? "blobs.unavailable" : "vectors.unavailable", {{"error", e.to_string()}});
          HttpResponse res = error_response(503, "UNAVAILABLE",
                                            std::string(blobs ? "blob storage" : "the vector store") + " is unavailable (" +
                                                error_code_name(e.code) + (blobs ? "); nothing was stored, retry later" : "); retry later"),
                                            {{"service", service->second}});
          res.headers.emplace_back("Retry-After", "5");
          return res;
        }
      }
      return error_response(503, "UNAVAILABLE", e.message, details);
    }
    default: return error_response(500, "INTERNAL", e.message, {});
  }
}

ApiService::ApiService(PipelineContext& ctx, EventBus& bus, ApiOptions options, PushHub* hub)
    : ctx_(ctx), bus_(bus), options_(std::move(options)), hub_(hub) {
  if (hub_) {
    push_ = std::make_unique<PushContext>(PushContext{*hub_, ctx_.metrics, {}, {}});
    push_->heartbeat = options_.push_heartbeat;
    push_->authenticate = [this](const std::string& key) -> Result<std::string> {
      HttpRequest probe;
      probe.headers.emplace_back("x-api-key", key);
      auto credentials = authenticate(probe);
      if (!credentials) return std::move(credentials).error();
      return credentials->tenant.id;
    };
    push_->status_of = [this](const std::string& tenant, const std::string& image, const std::string& transition) {
      return status_changed_data(ctx_.store, tenant, image, StatusTransition::of(transition), status_options());
    };
    ctx_.metrics.describe("deeplens_push_connections", "gauge", "open WebSocket and event-stream connections");
    ctx_.metrics.describe("deeplens_push_subscriptions", "gauge", "real-time subscriptions");
    ctx_.metrics.describe("deeplens_push_history_events", "gauge", "events kept for resuming clients");
    ctx_.metrics.add_collector([hub](Metrics& m) {
      m.set("deeplens_push_connections", {}, static_cast<double>(hub->connections()));
      m.set("deeplens_push_subscriptions", {}, static_cast<double>(hub->subscriptions()));
      m.set("deeplens_push_history_events", {}, static_cast<double>(hub->history_size()));
    });
  }
  for (const auto& spec : kRouteSpecs)
    routes_.push_back(Route{spec.method, spec.pattern, spec.spool, spec.auth, spec.name,
                            [this, fn = spec.fn](HttpRequest& r) { return (this->*fn)(r); }, spec.run_on});
  for (const auto& name : options_.models)
    if (Extractor* model = ctx_.models(name); model && model->info().batches)
      batchers_.emplace(name, std::make_unique<QueryBatcher>(*model, options_.query_batch, options_.query_waiting));
  if (!batchers_.empty()) {
    ctx_.metrics.describe("deeplens_search_model_calls_total", "counter",
                          "model calls for searches by image (queries in flight together share one)");
    ctx_.metrics.describe("deeplens_search_queries_waiting", "gauge", "searches by image waiting for a model call");
  }
  ctx_.metrics.describe("deeplens_http_requests_total", "counter", "HTTP requests by route and status");
  ctx_.metrics.describe("deeplens_http_request_seconds", "histogram", "HTTP request latency by route");
}

const Route* ApiService::match(const std::string& method, const std::string& path,
                               std::map<std::string, std::string>& params, bool& path_known) const {
  path_known = false;
  for (const auto& r : routes_) {
    std::map<std::string, std::string> found;
    if (!match_route_pattern(r.pattern, path, found)) continue;
    path_known = true;
    if (r.method != method) continue;
    params = std::move(found);
    return &r;
  }
  return nullptr;
}

namespace {

// Metrics labels come from a fixed set only: a client's method string would be an unbounded series.
const char* method_label(const std::string& m) {
  for (const char* known : {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
    if (m == known) return known;
  return "OTHER";
}

std::string presented_key(const HttpRequest& req) {
  std::string key = req.header("x-api-key");
  const std::string auth = req.header("authorization");
  if (key.empty() && auth.size() > 7 && (auth.rfind("Bearer ", 0) == 0 || auth.rfind("bearer ", 0) == 0))
    key = auth.substr(7);
  return key;
}

HttpResponse unauthenticated(const std::string& message) {
  HttpResponse res = error_response(401, "UNAUTHENTICATED", message);
  res.headers.emplace_back("WWW-Authenticate", "Bearer");
  return res;
}

}  // namespace

ApiKey api_key_record(IdGenerator& ids, const std::string& tenant_id, const std::string& secret,
                      const std::string& name, Timestamp now) {
  ApiKey k;
  k.id = "key_" + ids.hex(8);
  k.tenant_id = tenant_id;
  k.name = name;
  k.prefix = secret.substr(0, std::min<size_t>(secret.size(), 12));
  k.created_at = now;
  return k;
}

Result<CreatedApiKey> create_api_key(MetadataStore& store, IdGenerator& ids, const std::string& tenant_id,
                                     const std::string& name, Timestamp now, std::optional<Timestamp> expires_at) {
  CreatedApiKey out;
  out.secret = "dlk_" + ids.hex(32);
  out.info = api_key_record(ids, tenant_id, out.secret, name, now);
  out.info.expires_at = expires_at;
  if (auto st = store.add_api_key(out.info, sha256_hex(out.secret)); !st) return std::move(st).error();
  return out;
}

Result<ApiService::Credentials> ApiService::authenticate(const HttpRequest& req) {
  const std::string key = presented_key(req);
  if (key.empty())
    return Error(ErrorCode::kUnauthenticated,
                 "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'");
  const std::string hash = sha256_hex(key);
  const auto now = std::chrono::steady_clock::now();
  std::optional<Credentials> found;
  {
    std::lock_guard lock(auth_mu_);
    auto it = key_cache_.find(hash);
    if (it != key_cache_.end() && now - it->second.fetched < options_.key_cache_ttl) found = it->second;
  }
  if (!found) {
    // The lookup is by the key's SHA-256, so its timing tells nothing about the key's characters.
    auto stored = ctx_.store.find_api_key(hash);
    if (!stored) {
      if (stored.error().code == ErrorCode::kNotFound) return Error(ErrorCode::kUnauthenticated, "invalid API key");
      return std::move(stored).error();
    }
    auto tenant = ctx_.store.get_tenant(stored->tenant_id);
    if (!tenant) {
      if (tenant.error().code == ErrorCode::kNotFound) return Error(ErrorCode::kUnauthenticated, "invalid API key");
      return std::move(tenant).error();
    }
    const Timestamp wall = ctx_.clock.now();
    if (stored->usable(wall) && (!stored->last_used_at || wall - *stored->last_used_at > std::chrono::minutes(1))) {
      if (auto st = ctx_.store.touch_api_key(stored->id, wall); !st)
        log_warn("auth.touch_failed", {{"keyId", stored->id}, {"error", st.error().message}});
      stored->last_used_at = wall;
    }
    found = Credentials{std::move(stored).value(), std::move(tenant).value(), now};
    std::lock_guard lock(auth_mu_);
    if (key_cache_.size() > 10000) key_cache_.clear();
    key_cache_[hash] = *found;
  }
  if (found->key.revoked_at) return Error(ErrorCode::kUnauthenticated, "this API key was revoked");
  if (!found->key.usable(ctx_.clock.now())) return Error(ErrorCode::kUnauthenticated, "this API key has expired");
  return std::move(found).value();
}

StorageQuota ApiService::quota_of(const Tenant& t) const {
  return StorageQuota{t.limits.max_images.value_or(options_.tenant_limits.max_images),
                      t.limits.max_bytes.value_or(options_.tenant_limits.max_bytes)};
}

std::optional<HttpResponse> ApiService::over_rate(const Tenant& t, bool upload) {
  const double rate = upload ? t.limits.upload_rate.value_or(options_.tenant_limits.upload_rate)
                             : t.limits.search_rate.value_or(options_.tenant_limits.search_rate);
  if (rate <= 0) return std::nullopt;
  const char* limit = upload ? "upload_rate" : "search_rate";
  auto wait = ctx_.store.take_rate_token(std::string(limit) + ":" + t.id, rate, std::max(1.0, rate), ctx_.clock.now());
  if (!wait) return error_from(wait.error());
  if (*wait <= 0) return std::nullopt;
  char rate_text[32];
  std::snprintf(rate_text, sizeof rate_text, "%g", rate);
  HttpResponse res = error_response(
      429, "RATE_LIMITED",
      std::string("too many ") + (upload ? "uploads" : "searches") + " for this tenant: the limit is " + rate_text +
          " per second (" + limit + "); retry after the Retry-After seconds",
      {{"limit", limit}, {"ratePerSecond", rate_text}});
  res.headers.emplace_back("Retry-After", std::to_string(static_cast<int64_t>(std::ceil(*wait))));
  return res;
}

Admission ApiService::admit(HttpRequest& req) {
  Admission out;
  bool known = false;
  const Route* route = match(req.method, req.path, req.params, known);
  if (!route) return out;  // handle() answers 404 / 405; any body is small and dropped
  out.spool = route->spool;
  out.run_on = route->run_on;
  // A search by image runs a model forward: on the pool kept for those.
  if (route->fn_name == "search" && !multipart_boundary(req.header("content-type")).empty()) out.run_on = RunOn::kQueries;
  req.admitted = true;
  if (route->fn_name == "websocket" && !presented_key(req).empty()) {
    // A non-browser client authenticates on the upgrade; a wrong key is refused before it.
    auto credentials = authenticate(req);
    if (!credentials)
      out.refusal = credentials.error().code == ErrorCode::kUnauthenticated ? unauthenticated(credentials.error().message)
                                                                             : error_from(credentials.error());
    else
      req.tenant_id = credentials->tenant.id, req.api_key_id = credentials->key.id;
    return out;
  }
  if (!route->auth) return out;
  auto credentials = authenticate(req);
  if (!credentials) {
    out.refusal = credentials.error().code == ErrorCode::kUnauthenticated ? unauthenticated(credentials.error().message)
                                                                           : error_from(credentials.error());
    return out;
  }
  req.tenant_id = credentials->tenant.id;
  req.api_key_id = credentials->key.id;
  const bool upload = route->fn_name == "upload", search = route->fn_name == "search";
  if (upload || search)
    if (auto limited = over_rate(credentials->tenant, upload)) {
      out.refusal = std::move(limited);
      return out;
    }
  if (upload) {
    // Refused from the headers when the tenant is already full (the insert checks again).
    const StorageQuota quota = quota_of(credentials->tenant);
    ImageRecord probe;
    probe.tenant_id = req.tenant_id;
    if (auto st = check_quota(probe, quota, credentials->tenant.image_count, credentials->tenant.bytes_stored); !st)
      out.refusal = error_from(st.error());
  }
  return out;
}

HttpResponse ApiService::handle(HttpRequest& req) {
  const auto start = std::chrono::steady_clock::now();
  bool known = false;
  const Route* route = match(req.method, req.path, req.params, known);
  HttpResponse res;
  std::string route_name = route ? route->pattern : "unmatched";
  if (!route) {
    res = known ? error_response(405, "METHOD_NOT_ALLOWED", req.method + " is not allowed on " + req.path)
                : error_response(404, "NOT_FOUND", "no such endpoint: " + req.path);
  } else if (!req.admitted) {
    if (auto admission = admit(req); admission.refusal) res = std::move(*admission.refusal);
    else res = route->handler(req);
  } else {
    res = route->handler(req);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ctx_.metrics.add("deeplens_http_requests_total",
                   {{"method", method_label(req.method)}, {"route", route_name}, {"status", std::to_string(res.status)}});
  ctx_.metrics.observe("deeplens_http_request_seconds", {{"route", route_name}}, seconds);
  if (res.status >= 500)
    log_error("http.error", {{"path", req.path}, {"status", res.status}, {"body", res.body}});
  return res;
}

// ------------------------------------------------------------------------------------------------

HttpResponse ApiService::upload(HttpRequest& req) {
  auto body = MultipartBody::open(req.body_file, req.header("content-type"));
  if (!body) return error_response(400, "INVALID_MULTIPART", body.error().message);
  const MultipartPart* file = (*body)->find("file");
  if (!file)
    return error_response(400, "MISSING_FILE", "the form has no 'file' part with the image", {{"field", "file"}});
  if (file->data.empty()) return error_response(400, "EMPTY_FILE", "the uploaded file is empty", {{"field", "file"}});

  ProcessingOptions options;
  if (const auto* po = (*body)->find("processingOptions")) {
    auto j = json::parse(po->data, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      return error_response(400, "INVALID_PROCESSING_OPTIONS", "processingOptions must be a JSON object",
                            {{"field", "processingOptions"}});
    if (j.contains("models")) {
      if (!j["models"].is_array() || j["models"].empty())
        return error_response(400, "INVALID_PROCESSING_OPTIONS", "processingOptions.models must be a non-empty array of model names",
                              {{"field", "processingOptions.models"}});
      for (const auto& m : j["models"]) {
        if (!m.is_string())
          return error_response(400, "INVALID_PROCESSING_OPTIONS", "processingOptions.models must hold strings",
                                {{"field", "processingOptions.models"}});
        const auto name = m.get<std::string>();
        if (std::find(options_.models.begin(), options_.models.end(), name) == options_.models.end()) {
          std::string known;
          for (const auto& k : options_.models) known += (known.empty() ? "" : ", ") + k;
          return error_response(400, "UNKNOWN_MODEL", "model '" + name + "' is not configured; available: " + known,
                                {{"field", "processingOptions.models"}, {"model", name}});
        }
        if (std::find(options.models.begin(), options.models.end(), name) == options.models.end())
          options.models.push_back(name);
      }
    }
    if (j.contains("priority")) {
      const auto& p = j["priority"];
      if (!p.is_string() || (p != "high" && p != "normal" && p != "low"))
        return error_response(400, "INVALID_PROCESSING_OPTIONS", "processingOptions.priority must be high, normal or low",
                              {{"field", "processingOptions.priority"}});
      options.priority = p == "high" ? Priority::kHigh : p == "low" ? Priority::kLow : Priority::kNormal;
    }
    for (const char* flag : {"skipDuplicateCheck", "generateThumbnail"}) {
      if (!j.contains(flag)) continue;
      if (!j[flag].is_boolean())
        return error_response(400, "INVALID_PROCESSING_OPTIONS", std::string("processingOptions.") + flag + " must be a boolean",
                              {{"field", std::string("processingOptions.") + flag}});
      (std::string(flag) == "skipDuplicateCheck" ? options.skip_duplicate_check : options.generate_thumbnail) =
          j[flag].get<bool>();
    }
  }
  if (options.models.empty()) options.models = {options_.default_model};

  if (static_cast<int64_t>(file->data.size()) > options_.limits.max_bytes)
    return error_response(413, "FILE_TOO_LARGE",
                          "the file has " + std::to_string(file->data.size()) + " bytes; the limit is " +
                              std::to_string(options_.limits.max_bytes),
                          {{"field", "file"}});

  auto writer = ctx_.blobs.begin_write();
  if (!writer) return error_from(writer.error());
  Sha256 hash;
  constexpr size_t kChunk = 1 << 20;
  for (size_t off = 0; off < file->data.size(); off += kChunk) {
    auto chunk = file->data.substr(off, kChunk);
    hash.update(chunk);
    if (auto st = (*writer)->write(std::span(reinterpret_cast<const uint8_t*>(chunk.data()), chunk.size())); !st)
      return error_from(st.error());
  }
  auto info = probe_file((*writer)->temp_path(), options_.limits);
  if (!info) return error_from(info.error());

  UploadRequest up;
  up.tenant_id = req.tenant_id;
  std::string name = file->filename;
  if (const auto* fn = (*body)->find("fileName"); fn && !fn->data.empty()) name = std::string(fn->data);
  up.file_name = sanitize_file_name(name);
  if (const auto* by = (*body)->find("uploadedBy")) up.uploaded_by = sanitize_file_name(by->data);
  up.options = options;
  up.idempotency_key = req.header("idempotency-key").substr(0, 200);
  up.sha256 = hash.hex_digest();
  up.info = std::move(info).value();
  up.blob = std::move(writer).value();
  auto credentials = authenticate(req);
  if (!credentials) return error_from(credentials.error());
  up.quota = quota_of(credentials->tenant);
  auto outcome = accept_upload(ctx_, std::move(up));
  if (!outcome) return error_from(outcome.error());

  const auto& image = outcome->image;
  ojson j;
  j["imageId"] = image.image_id;
  if (outcome->kind == CreateImageOutcome::Kind::kDuplicate) {
    j["status"] = image_status_name(image.status);
    j["message"] = "An identical image was already uploaded; returning it. Set processingOptions.skipDuplicateCheck to store a copy.";
    j["duplicate"] = true;
    j["statusCheckUrl"] = image_url(image.image_id) + "/status";
    return json_response(200, j.dump());
  }
  j["status"] = "uploaded";
  j["message"] = "Image uploaded successfully. Processing started.";
  // From the queue ahead of it in its lane and the observed extraction rate (pipeline/eta.h); the
  // upload is acknowledged even when the estimate cannot be made.
  auto eta = estimate_remaining_ms(ctx_.store, image, {}, status_options());
  if (!eta) log_warn("upload.estimate_failed", {{"imageId", image.image_id}, {"error", eta.error().to_string()}});
  j["estimatedProcessingTime"] = human_estimate(eta ? static_cast<double>(*eta) : 1000.0);
  j["statusCheckUrl"] = image_url(image.image_id) + "/status";
  if (outcome->kind == CreateImageOutcome::Kind::kIdempotentReplay) j["idempotentReplay"] = true;
  HttpResponse res = json_response(202, j.dump());
  res.headers.emplace_back("Location", image_url(image.image_id));
  return res;
}

HttpResponse ApiService::status(HttpRequest& req) {
  auto view = load_status(ctx_.store, req.tenant_id, req.params["id"], status_options());
  if (!view) {
    if (view.error().code == ErrorCode::kNotFound) return not_found_image(req.params["id"]);
    return error_from(view.error());
  }
  return json_response(200, status_json(*view));
}

HttpResponse ApiService::get_image(HttpRequest& req) {
  auto image = ctx_.store.get_image(req.tenant_id, req.params["id"]);
  if (!image) return image.error().code == ErrorCode::kNotFound ? not_found_image(req.params["id"]) : error_from(image.error());
  return json_response(200, image_json(*image).dump());
}

HttpResponse ApiService::get_content(HttpRequest& req) {
  auto image = ctx_.store.get_image(req.tenant_id, req.params["id"]);
  if (!image) return image.error().code == ErrorCode::kNotFound ? not_found_image(req.params["id"]) : error_from(image.error());
  auto bytes = ctx_.blobs.read(image->storage_path);
  if (!bytes) return error_from(bytes.error());
  HttpResponse res{200, image->content_type, std::move(bytes).value(), {}, nullptr};  // the type sniffed at upload
  res.headers.emplace_back("Cache-Control", "private, max-age=31536000, immutable");
  res.headers.emplace_back("Content-Disposition", content_disposition(image->file_name));
  // An image opened directly runs nothing and loads nothing, whatever its bytes claim to be.
  res.headers.emplace_back("Content-Security-Policy", "default-src 'none'; img-src 'self'; sandbox");
  return res;
}

HttpResponse ApiService::get_thumbnail(HttpRequest& req) {
  auto image = ctx_.store.get_image(req.tenant_id, req.params["id"]);
  if (!image) return image.error().code == ErrorCode::kNotFound ? not_found_image(req.params["id"]) : error_from(image.error());
  if (image->thumbnail_path.empty())
    return error_response(404, "THUMBNAIL_NOT_FOUND", "this image has no thumbnail (yet)", {{"imageId", image->image_id}});
  auto bytes = ctx_.blobs.read(image->thumbnail_path);
  if (!bytes) return error_from(bytes.error());
  return HttpResponse{200, "image/jpeg", std::move(bytes).value(), {{"Cache-Control", "private, max-age=3600"}}, nullptr};
}

HttpResponse ApiService::list_images(HttpRequest& req) {
  std::optional<ImageStatus> status;
  if (auto it = req.query.find("status"); it != req.query.end() && !it->second.empty()) {
    status = parse_image_status(it->second);
    if (!status)
      return error_response(400, "INVALID_REQUEST", "status must be uploaded, processing, completed or failed",
                            {{"field", "status"}});
  }
  bool duplicates = false;
  if (auto it = req.query.find("duplicates"); it != req.query.end() && !it->second.empty()) {
    if (it->second != "true" && it->second != "false")
      return error_response(400, "INVALID_REQUEST", "duplicates must be true or false", {{"field", "duplicates"}});
    duplicates = it->second == "true";
  }
  auto limit_or = query_limit(req, 50, 500);
  if (auto* bad = std::get_if<HttpResponse>(&limit_or)) return *bad;
  const int limit = std::get<int>(limit_or);
  auto page = ctx_.store.list_images(req.tenant_id, status, limit, req.query["cursor"], duplicates);
  if (!page) return error_from(page.error());
  ojson j;
  j["images"] = ojson::array();
  for (const auto& img : page->images) j["images"].push_back(image_json(img));
  j["nextCursor"] = page->next_cursor.empty() ? json(nullptr) : json(page->next_cursor);
  return json_response(200, j.dump());
}

HttpResponse ApiService::delete_image(HttpRequest& req) {
  if (auto st = deeplens::delete_image(ctx_, req.tenant_id, req.params["id"]); !st) return error_from(st.error());
  return HttpResponse{204, "application/json", "", {}, nullptr};  // also when absent: idempotent
}

namespace {

HttpResponse bad_search_field(const std::string& field, const std::string& message) {
  return error_response(400, "INVALID_REQUEST", message, {{"field", field}});
}

// The search body's "filter" object (JSON, or the text of a multipart "filter" part).
std::optional<HttpResponse> parse_search_filter(const json& f, SearchFilter& out) {
  if (!f.is_object()) return bad_search_field("filter", "filter must be a JSON object");
  for (const auto& [key, value] : f.items()) {
    if (key == "uploadedAfter" || key == "uploadedBefore") {
      const std::string field = "filter." + key;
      auto t = value.is_string() ? parse_iso8601(value.get<std::string>()) : Result<Timestamp>(Error(ErrorCode::kInvalidArgument, ""));
      if (!t) return bad_search_field(field, field + " must be an ISO-8601 time, e.g. 2026-01-31T12:00:00Z");
      (key == "uploadedAfter" ? out.uploaded_after : out.uploaded_before) = *t;
    } else if (key == "status") {
      if (!value.is_array()) return bad_search_field("filter.status", "filter.status must be an array of statuses");
      for (const auto& v : value) {
        auto st = v.is_string() ? parse_image_status(v.get<std::string>()) : std::nullopt;
        if (!st) return bad_search_field("filter.status", "filter.status holds uploaded, processing, completed or failed");
        out.statuses.push_back(*st);
      }
    } else if (key == "excludeIds") {
      if (!value.is_array()) return bad_search_field("filter.excludeIds", "filter.excludeIds must be an array of image ids");
      for (const auto& v : value) {
        if (!v.is_string()) return bad_search_field("filter.excludeIds", "filter.excludeIds must be an array of image ids");
        out.exclude_ids.push_back(v.get<std::string>());
      }
    } else {
      return bad_search_field("filter." + key, "unknown filter '" + key +
                                                   "'; filters are uploadedAfter, uploadedBefore, status, excludeIds");
    }
  }
  return std::nullopt;
}

}  // namespace

HttpResponse ApiService::search(HttpRequest& req) {
  SearchQuery q;
  q.tenant_id = req.tenant_id;
  q.model = options_.default_model;
  auto number_field = [](const std::string& text, double& out) {
    try {
      size_t used = 0;
      out = std::stod(text, &used);
      return used == text.size();
    } catch (...) {
      return false;
    }
  };
  const std::string content_type = req.header("content-type");
  std::unique_ptr<MultipartBody> multipart;
  if (!multipart_boundary(content_type).empty()) {
    auto body = MultipartBody::open(req.body_file, content_type);
    if (!body) return error_response(400, "INVALID_MULTIPART", body.error().message);
    multipart = std::move(body).value();
    const auto* file = multipart->find("file");
    if (!file || file->data.empty())
      return error_response(400, "MISSING_FILE", "search by image needs a non-empty 'file' part", {{"field", "file"}});
    q.image_bytes = std::string(file->data);
    if (const auto* m = multipart->find("model"); m && !m->data.empty()) q.model = std::string(m->data);
    double v = 0;
    if (const auto* k = multipart->find("topK")) {
      if (!number_field(std::string(k->data), v) || v != static_cast<int>(v))
        return error_response(400, "INVALID_REQUEST", "topK must be an integer", {{"field", "topK"}});
      q.top_k = v < 0 ? 0 : static_cast<size_t>(v);
    }
    if (const auto* s = multipart->find("minScore")) {
      if (!number_field(std::string(s->data), v))
        return error_response(400, "INVALID_REQUEST", "minScore must be a number", {{"field", "minScore"}});
      q.min_score = static_cast<float>(v);
    }
    if (const auto* o = multipart->find("offset")) {
      if (!number_field(std::string(o->data), v) || v != static_cast<int64_t>(v) || v < 0)
        return bad_search_field("offset", "offset must be a non-negative integer");
      q.offset = static_cast<size_t>(std::min(v, 1e9));
    }
    if (const auto* e = multipart->find("ef")) {
      if (!number_field(std::string(e->data), v) || v != static_cast<int64_t>(v) || v < 1)
        return bad_search_field("ef", "ef must be a positive integer");
      q.ef = static_cast<size_t>(std::min(v, 1e9));
    }
    if (const auto* x = multipart->find("exact")) {
      if (x->data != "true" && x->data != "false") return bad_search_field("exact", "exact must be true or false");
      q.exact = x->data == "true";
    }
    if (const auto* f = multipart->find("filter"); f && !f->data.empty()) {
      auto parsed = json::parse(f->data, nullptr, false);
      if (parsed.is_discarded()) return bad_search_field("filter", "the filter part must be a JSON object");
      if (auto bad = parse_search_filter(parsed, q.filter)) return *bad;
    }
  } else {
    std::string text = req.body;
    if (text.empty() && !req.body_file.empty()) {
      std::error_code ec;
      if (std::filesystem::file_size(req.body_file, ec) > (1u << 20))
        return error_response(413, "PAYLOAD_TOO_LARGE", "a JSON search request is limited to 1 MiB");
      std::ifstream in(req.body_file, std::ios::binary);
      text.assign(std::istreambuf_iterator<char>(in), {});
    }
    auto j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      return error_response(400, "INVALID_REQUEST", "send multipart/form-data with a 'file', or a JSON object with 'imageId'");
    if (!j.contains("imageId") || !j["imageId"].is_string())
      return error_response(400, "INVALID_REQUEST", "imageId (string) is required in a JSON search", {{"field", "imageId"}});
    q.image_id = j["imageId"].get<std::string>();
    if (j.contains("model")) {
      if (!j["model"].is_string()) return error_response(400, "INVALID_REQUEST", "model must be a string", {{"field", "model"}});
      q.model = j["model"].get<std::string>();
    }
    if (j.contains("topK")) {
      if (!j["topK"].is_number_integer()) return error_response(400, "INVALID_REQUEST", "topK must be an integer", {{"field", "topK"}});
      const auto k = j["topK"].get<int64_t>();
      q.top_k = k < 0 ? 0 : static_cast<size_t>(k);
    }
    if (j.contains("minScore")) {
      if (!j["minScore"].is_number()) return error_response(400, "INVALID_REQUEST", "minScore must be a number", {{"field", "minScore"}});
      q.min_score = j["minScore"].get<float>();
    }
    if (j.contains("offset")) {
      if (!j["offset"].is_number_unsigned()) return bad_search_field("offset", "offset must be a non-negative integer");
      q.offset = static_cast<size_t>(std::min<uint64_t>(j["offset"].get<uint64_t>(), 1000000000));
    }
    if (j.contains("ef")) {
      if (!j["ef"].is_number_unsigned() || j["ef"].get<uint64_t>() == 0) return bad_search_field("ef", "ef must be a positive integer");
      q.ef = static_cast<size_t>(std::min<uint64_t>(j["ef"].get<uint64_t>(), 1000000000));
    }
    if (j.contains("exact")) {
      if (!j["exact"].is_boolean()) return bad_search_field("exact", "exact must be true or false");
      q.exact = j["exact"].get<bool>();
    }
    if (j.contains("filter"))
      if (auto bad = parse_search_filter(j["filter"], q.filter)) return *bad;
  }
  auto result = search_images(ctx_, q, [this](Extractor& model, const ExtractorInput& input) -> Result<std::vector<float>> {
    if (auto it = batchers_.find(model.info().name); it != batchers_.end()) {
      QueryBatcher& batcher = *it->second;
      auto v = batcher.extract(input);
      ctx_.metrics.set("deeplens_search_model_calls_total", {{"model", it->first}}, static_cast<double>(batcher.calls()));
      ctx_.metrics.set("deeplens_search_queries_waiting", {{"model", it->first}}, static_cast<double>(batcher.waiting()));
      return v;
    }
    auto vectors = model.extract(std::span(&input, 1));
    if (!vectors) return std::move(vectors).error();
    if (vectors->size() != 1) return Error(ErrorCode::kInternal, "extractor returned no vector for the query image");
    return std::move((*vectors)[0]);
  });
  if (!result) {
    const auto& e = result.error();
    auto field = e.context.find("field");
    if (e.code == ErrorCode::kNotFound && field != e.context.end() && field->second == "model")
      return error_response(400, "UNKNOWN_MODEL", e.message, e.context);
    if (e.code == ErrorCode::kNotFound) return error_response(404, "IMAGE_NOT_FOUND", e.message, e.context);
    if (e.code == ErrorCode::kFailedPrecondition) return error_response(409, "NOT_INDEXED", e.message, e.context);
    return error_from(e);
  }
  ojson j;
  j["model"] = result->model;
  j["collection"] = result->collection;
  j["extractionMs"] = result->extraction_ms;
  j["searchMs"] = result->search_ms;
  j["offset"] = q.offset;
  // A full page may have more after it; a short one is the last.
  j["nextOffset"] = result->results.size() == q.top_k && q.offset + q.top_k <= kMaxSearchOffset
                        ? json(q.offset + q.top_k) : json(nullptr);
  j["results"] = ojson::array();
  for (const auto& r : result->results) {
    ojson item;
    item["imageId"] = r.image_id;
    item["score"] = r.score;
    item["fileName"] = r.image.file_name;
    item["thumbnailUrl"] = r.image.thumbnail_path.empty() ? json(nullptr) : json(image_url(r.image_id) + "/thumbnail");
    item["contentUrl"] = image_url(r.image_id) + "/content";
    j["results"].push_back(std::move(item));
  }
  return json_response(200, j.dump());
}

HttpResponse ApiService::healthz(HttpRequest&) { return json_response(200, R"({"status":"ok"})"); }

HttpResponse ApiService::readyz(HttpRequest&) {
  ojson checks;
  bool ready = true;
  auto check = [&](const char* name, const Status& st) {
    checks[name] = st ? "ok" : st.error().message;
    ready = ready && st.ok();
  };
  check("metadata", ctx_.store.ping());
  check("bus", bus_.ping());
  check("blobs", ctx_.blobs.ping());
  // Unauthenticated: the vector store's address stays in the log.
  Status vectors = ctx_.vectors.ping();
  if (!vectors) {
    log_warn("readyz.vectors", {{"error", vectors.error().to_string()}});
    vectors = Error(vectors.error().code, std::string("vector store unavailable (") + error_code_name(vectors.error().code) + ")");
  }
  check("vectors", vectors);
  ojson j;
  j["status"] = ready ? "ready" : "unavailable";
  j["checks"] = checks;
  return json_response(ready ? 200 : 503, j.dump());
}

HttpResponse ApiService::metrics(HttpRequest&) {
  return HttpResponse{200, "text/plain; version=0.0.4", ctx_.metrics.render(), {}, nullptr};
}

namespace {

HttpResponse too_many_streams(const PushHub& hub) {
  return error_response(429, "TOO_MANY_CONNECTIONS",
                        "the tenant has " + std::to_string(hub.options().max_connections_per_tenant) +
                            " real-time connections open, the limit (push.max_connections_per_tenant)",
                        {{"limit", std::to_string(hub.options().max_connections_per_tenant)}});
}

HttpResponse push_disabled() {
  return error_response(503, "UNAVAILABLE", "real-time updates are not served by this process");
}

}  // namespace

HttpResponse ApiService::websocket(HttpRequest& req) {
  if (!hub_) return push_disabled();
  if (!req.tenant_id.empty() && !hub_->open_connection(req.tenant_id)) return too_many_streams(*hub_);
  HttpResponse res;
  res.status = 101;
  res.stream = PushSession::websocket(*push_, req.tenant_id);  // releases the connection when it ends
  return res;
}

HttpResponse ApiService::events(HttpRequest& req) {
  if (!hub_) return push_disabled();
  auto q = req.query.find("topic");
  const std::string topic = q == req.query.end() ? "tenant" : q->second;
  std::string image_id;
  if (!parse_push_topic(topic, &image_id))
    return error_response(400, "INVALID_TOPIC", "topic must be \"tenant\" or \"image:<imageId>\", got '" + topic + "'",
                          {{"topic", topic}});
  std::optional<uint64_t> since;
  if (const std::string last = req.header("last-event-id"); !last.empty()) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(last.c_str(), &end, 10);
    if (errno || end == last.c_str() || *end != '\0' || last[0] == '-')
      return error_response(400, "INVALID_REQUEST", "Last-Event-ID must be a seq (a non-negative integer)",
                            {{"lastEventId", last}});
    since = v;
  }
  if (!image_id.empty()) {
    auto image = ctx_.store.get_image(req.tenant_id, image_id);
    if (!image) return image.error().code == ErrorCode::kNotFound ? not_found_image(image_id) : error_from(image.error());
  }
  if (!hub_->open_connection(req.tenant_id)) return too_many_streams(*hub_);
  HttpResponse res;
  res.status = 200;
  res.content_type = "text/event-stream";
  res.stream = PushSession::event_stream(*push_, req.tenant_id, topic, since);
  return res;
}

}  // namespace deeplens::api
