// ApiService: the REST API of ARCHITECTURE.md / openapi.yaml over the pipeline's interfaces —
// upload (multipart, spooled), status, image management, search, health, readiness, metrics —
// with per-tenant API keys (stored as SHA-256 hashes; a tenant never sees another's images: a
// foreign id answers 404).
//
// handle() is called concurrently by the HTTP server's threads; the service is thread-safe.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "api/http.h"
#include "bus/event_bus.h"
#include "pipeline/context.h"

namespace deeplens::api {

struct ApiOptions {
  std::string default_model = "builtin";   // used when processingOptions.models is absent
  std::vector<std::string> models;          // every model a request may name
  ImageLimits limits;                       // upload.max_bytes, upload.max_pixels, upload.max_edge
};

struct Route {
  std::string method;
  std::string pattern;  // "/api/v1/images/{id}/status"
  bool spool = false;   // body streamed to disk
  bool auth = true;     // needs an API key
  std::function<HttpResponse(HttpRequest&)> handler;
};

class ApiService {
 public:
  ApiService(PipelineContext& ctx, EventBus& bus, ApiOptions options);

  HttpResponse handle(HttpRequest& req);
  // Whether a request's body should be spooled to disk (called with the headers only).
  bool spools(const std::string& method, const std::string& path) const;
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

 private:
  const Route* match(const std::string& method, const std::string& path, std::map<std::string, std::string>& params,
                     bool& path_known) const;
  Result<std::string> authenticate(const HttpRequest& req);

  PipelineContext& ctx_;
  EventBus& bus_;
  ApiOptions options_;
  std::vector<Route> routes_;
  std::mutex auth_mu_;
  std::map<std::string, std::string> key_cache_;  // sha256(key) -> tenant
};

// A new API key "dlk_<hex>" for tenant; only its SHA-256 is stored, so it is shown once.
Result<std::string> create_api_key(MetadataStore& store, IdGenerator& ids, const std::string& tenant_id);

// Maps an imaging / pipeline error to an HTTP error response.
HttpResponse error_from(const Error& e);

}  // namespace deeplens::api
