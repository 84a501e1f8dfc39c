// ApiService: the REST API of ARCHITECTURE.md / openapi.yaml over the pipeline's interfaces —
// upload (multipart, spooled), status, image management, search, health, readiness, metrics —
// with per-tenant API keys (stored as SHA-256 hashes; a tenant never sees another's images: a
// foreign id answers 404).
//
// handle() is called concurrently by the HTTP server's threads; the service is thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <unordered_map>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "api/http.h"
#include "api/push_session.h"
#include "bus/event_bus.h"
#include "features/query_batcher.h"
#include "pipeline/context.h"
#include "pipeline/status.h"

namespace deeplens::webhooks {
class SecretBox;
}

namespace deeplens::api {

// Per-tenant limits where the tenant sets none (limits.*); 0 = unlimited.
struct DefaultTenantLimits {
  int64_t max_images = 0;
  int64_t max_bytes = 0;
  double upload_rate = 0;  // per second
  double search_rate = 0;
};

struct ApiOptions {
  std::string default_model = "builtin";   // used when processingOptions.models is absent
  std::vector<std::string> models;          // every model a request may name
  ImageLimits limits;                       // upload.max_bytes, upload.max_pixels, upload.max_edge
  DefaultTenantLimits tenant_limits;        // limits.*
  // How long a key's lookup (and its tenant's limits) is reused: a revoked key stops working in
  // every process within this time.
  std::chrono::milliseconds key_cache_ttl{500};
  std::chrono::milliseconds push_heartbeat{15000};  // push.sse_heartbeat_s: event-stream keep-alive comments
  // Searches by image with a model that batches (ModelInfo::batches) share forwards
  // (QueryBatcher): at most this many images per forward (search.query_batch), and at most
  // query_waiting queries waiting for one (then 503 SERVER_BUSY).
  size_t query_batch = 16;
  size_t query_waiting = 64;
};

// What the webhook routes need beyond the pipeline's context (ApiService::enable_webhooks).
struct WebhookApiContext {
  const webhooks::SecretBox* secrets = nullptr;  // seals new secrets; nullptr: the routes answer 503
  RandomSource* random = nullptr;                // the CSPRNG for secrets
  int max_per_tenant = 50;                       // webhooks.max_per_tenant
  bool allow_private_networks = false;           // webhooks.allow_private_networks
  std::chrono::seconds secret_overlap{86400};    // webhooks.secret_overlap_s: old secret still signs this long
  std::function<void()> kick;                    // a delivery is due now (the local dispatcher)
};

struct Route {
  std::string method;
  std::string pattern;  // "/api/v1/images/{id}/status"
  bool spool = false;   // body streamed to disk
  bool auth = true;     // needs an API key
  std::string fn_name;  // the handler's name ("upload", "search", ...)
  std::function<HttpResponse(HttpRequest&)> handler;
  RunOn run_on = RunOn::kPool;  // where the HTTP server runs the handler (http.h)
};

class ApiService {
 public:
  // hub: the real-time hub behind /api/v1/ws and /api/v1/events (nullptr: those answer 503).
  ApiService(PipelineContext& ctx, EventBus& bus, ApiOptions options, PushHub* hub = nullptr);

  HttpResponse handle(HttpRequest& req);
  // Called with the headers only, before any of the body is read: routing, authentication, rate
  // limits and the storage quota. Returns the refusal, if any, and whether the body is spooled.
  // Sets req.admitted, tenant_id and api_key_id. handle() runs it itself for a request not admitted.
  Admission admit(HttpRequest& req);
  const std::vector<Route>& routes() const { return routes_; }
  // (method, pattern) of every route, without a service instance.
  static std::vector<std::pair<std::string, std::string>> route_table();

  // Route handlers (public so the route table can name them).
  HttpResponse upload(HttpRequest& req);
  HttpResponse status(HttpRequest& req);
  HttpResponse get_image(HttpRequest& req);
  HttpResponse get_content(HttpRequest& req);
  HttpResponse get_thumbnail(HttpRequest& req);
  HttpResponse list_images(HttpRequest& req);
  HttpResponse delete_image(HttpRequest& req);
  HttpResponse search(HttpRequest& req);
  HttpResponse healthz(HttpRequest& req);
  HttpResponse readyz(HttpRequest& req);
  HttpResponse metrics(HttpRequest& req);
  HttpResponse websocket(HttpRequest& req);
  HttpResponse events(HttpRequest& req);
  // webhook_api.cc
  HttpResponse create_webhook(HttpRequest& req);
  HttpResponse list_webhooks(HttpRequest& req);
  HttpResponse get_webhook(HttpRequest& req);
  HttpResponse update_webhook(HttpRequest& req);
  HttpResponse delete_webhook(HttpRequest& req);
  HttpResponse rotate_webhook_secret(HttpRequest& req);
  HttpResponse test_webhook(HttpRequest& req);
  HttpResponse list_webhook_deliveries(HttpRequest& req);
  HttpResponse get_webhook_delivery(HttpRequest& req);
  HttpResponse redeliver_webhook_delivery(HttpRequest& req);
  // jobs_api.cc
  HttpResponse jobs(HttpRequest& req);
  HttpResponse list_dead_letters(HttpRequest& req);
  HttpResponse replay_dead_letter(HttpRequest& req);
  HttpResponse replay_dead_letters(HttpRequest& req);
  HttpResponse web_ui(HttpRequest& req);

  // Turns the webhook routes on (before the server starts).
  void enable_webhooks(WebhookApiContext context);

 private:
  StatusOptions status_options() const { return StatusOptions{ctx_.options.lane_weights, &ctx_.clock}; }
  const Route* match(const std::string& method, const std::string& path, std::map<std::string, std::string>& params,
                     bool& path_known) const;
  struct Credentials {
    ApiKey key;
    Tenant tenant;  // with its limits and usage (as of the lookup)
    std::chrono::steady_clock::time_point fetched;
  };
  Result<Credentials> authenticate(const HttpRequest& req);
  StorageQuota quota_of(const Tenant& tenant) const;
  std::optional<HttpResponse> over_rate(const Tenant& tenant, bool upload);
  std::optional<HttpResponse> webhooks_unavailable() const;
  std::optional<HttpResponse> check_webhook_url(const std::string& url) const;

  PipelineContext& ctx_;
  EventBus& bus_;
  ApiOptions options_;
  std::vector<Route> routes_;
  PushHub* hub_;
  std::unique_ptr<PushContext> push_;  // when hub_
  WebhookApiContext webhooks_;
  std::map<std::string, std::unique_ptr<QueryBatcher>> batchers_;  // by model name; fixed after construction
  std::mutex auth_mu_;
  std::unordered_map<std::string, Credentials> key_cache_;  // sha256(key) -> credentials; guarded by auth_mu_
};

struct CreatedApiKey {
  ApiKey info;
  std::string secret;  // "dlk_" + 64 hex (256 random bits); shown once, stored only as SHA-256
};
// A new API key for tenant.
Result<CreatedApiKey> create_api_key(MetadataStore& store, IdGenerator& ids, const std::string& tenant_id,
                                     const std::string& name, Timestamp now,
                                     std::optional<Timestamp> expires_at = std::nullopt);
// The public fields of a stored key under the same id scheme ("key_" + 16 hex), e.g. for a key
// from configuration (auth.default_key) that was not generated here.
ApiKey api_key_record(IdGenerator& ids, const std::string& tenant_id, const std::string& secret,
                      const std::string& name, Timestamp now);

// Maps an imaging / pipeline error to an HTTP error response.
HttpResponse error_from(const Error& e);

}  // namespace deeplens::api
