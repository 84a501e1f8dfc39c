#include "vectors/qdrant/qdrant_vector_store.h"

#include <cmath>
#include <thread>
#include <unordered_map>

#include "common/log.h"

namespace deeplens {

using nlohmann::json;

namespace {

constexpr size_t kScrollPage = 1000;

Error vectors_error(ErrorCode code, std::string message, const std::string& endpoint) {
  return Error(code, std::move(message)).with("service", "vectors").with("endpoint", endpoint);
}

std::vector<float> normalised(std::span<const float> v) {
  double norm = 0;
  for (float x : v) norm += static_cast<double>(x) * x;
  norm = std::sqrt(norm);
  std::vector<float> out(v.begin(), v.end());
  if (norm > 0)
    for (float& x : out) x = static_cast<float>(x / norm);
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// One logical collection. Every request that touches points is scoped by qdrant::tenant_filter.

class QdrantVectorStore::Index final : public VectorIndex {
 public:
  Index(QdrantVectorStore& store, qdrant::Target target, size_t dimension)
      : store_(store), target_(std::move(target)), dimension_(dimension) {}

  const std::string& name() const override { return target_.logical; }
  size_t dimension() const override { return dimension_; }

  size_t count() const override {
    auto r = store_.call("POST", points_path("/count"), {{"filter", filter()}, {"exact", true}});
    if (!r) {
      if (r.error().code != ErrorCode::kNotFound)
        log_warn("qdrant.count_failed", {{"collection", target_.logical}, {"error", r.error().to_string()}});
      return 0;
    }
    return r->value("count", size_t{0});
  }

  Status upsert(std::string_view id, std::span<const float> vector) override {
    const VectorUpsert one{id, vector};
    return write(std::span(&one, 1));
  }

  Status upsert_with_version(std::string_view id, std::span<const float> vector, std::string_view model_version) override {
    const VectorUpsert one{id, vector, model_version};
    return write(std::span(&one, 1));
  }

  Status upsert_batch(std::span<const VectorUpsert> batch) override { return write(batch); }

 private:
  Status write(std::span<const VectorUpsert> batch) {
    if (auto st = validate_batch(batch); !st) return st;
    if (batch.empty()) return {};
    // A later duplicate wins: only the last element of each id is sent.
    std::unordered_map<std::string_view, size_t> last;
    for (size_t i = 0; i < batch.size(); ++i) last[batch[i].id] = i;
    json points = json::array();
    for (size_t i = 0; i < batch.size(); ++i) {
      if (last[batch[i].id] != i) continue;
      json payload = {{"imageId", std::string(batch[i].id)}, {"tenantId", target_.tenant}, {"modelName", target_.model}};
      if (!batch[i].model_version.empty()) payload["modelVersion"] = std::string(batch[i].model_version);
      points.push_back({{"id", qdrant::point_id(target_, batch[i].id, store_.options_.multitenancy)},
                        {"vector", normalised(batch[i].vector)},
                        {"payload", std::move(payload)}});
    }
    const json body = {{"points", std::move(points)}};
    auto r = store_.call("PUT", points_path("?wait=true"), body);
    if (!r && r.error().code == ErrorCode::kNotFound) {
      // The collection was deleted behind our back: create it again, once.
      log_warn("qdrant.collection_recreated", {{"collection", target_.collection}});
      if (auto st = store_.ensure_collection(target_.collection, dimension_); !st) return st;
      r = store_.call("PUT", points_path("?wait=true"), body);
    }
    if (!r && r.error().code == ErrorCode::kInvalidArgument) return explain(std::move(r).error());
    return completed(r, "upsert");
  }

 public:
  Status remove(std::string_view id) override {
    auto r = store_.call("POST", points_path("/delete?wait=true"),
                         {{"filter", filter(qdrant::match("imageId", id))}});
    if (!r && r.error().code == ErrorCode::kNotFound) return {};  // no collection, no point
    return completed(r, "delete");
  }

  std::vector<std::string> ids() const override {
    std::vector<std::string> out;
    json offset = nullptr;
    for (;;) {
      json body = {{"filter", filter()}, {"limit", kScrollPage}, {"with_payload", {"imageId"}}, {"with_vector", false}};
      if (!offset.is_null()) body["offset"] = offset;
      auto r = store_.call("POST", points_path("/scroll"), body);
      if (!r) {
        if (r.error().code != ErrorCode::kNotFound)
          log_warn("qdrant.scroll_failed", {{"collection", target_.logical}, {"error", r.error().to_string()}});
        return out;
      }
      for (const auto& p : (*r)["points"])
        if (p.contains("payload") && p["payload"].is_object() && p["payload"].contains("imageId"))
          out.push_back(p["payload"]["imageId"].get<std::string>());
      offset = r->value("next_page_offset", json(nullptr));
      if (offset.is_null()) return out;
    }
  }

  Result<std::vector<float>> get(std::string_view id) const override {
    auto r = store_.call("POST", points_path("/scroll"),
                         {{"filter", filter(qdrant::match("imageId", id))}, {"limit", 1}, {"with_payload", false},
                          {"with_vector", true}});
    if (!r && r.error().code != ErrorCode::kNotFound) return std::move(r).error().with("collection", target_.logical);
    if (!r || (*r)["points"].empty() || !(*r)["points"][0].contains("vector") || !(*r)["points"][0]["vector"].is_array())
      return Error(ErrorCode::kNotFound, "no vector for this id").with("collection", target_.logical).with("id", std::string(id));
    return (*r)["points"][0]["vector"].get<std::vector<float>>();
  }

  using VectorIndex::search;
  Result<std::vector<SearchHit>> search(std::span<const float> query, size_t k, float min_score,
                                        const SearchOptions& options) const override {
    if (query.size() != dimension_)
      return Error(ErrorCode::kInvalidArgument, "query vector has the wrong dimension for this collection")
          .with("collection", target_.logical)
          .with("dimension", std::to_string(query.size()))
          .with("expected", std::to_string(dimension_));
    for (float x : query)
      if (!std::isfinite(x)) return Error(ErrorCode::kInvalidArgument, "query vector contains NaN or Inf");
    if (k == 0) return std::vector<SearchHit>{};
    json body = {{"query", normalised(query)},
                 {"limit", k},
                 {"score_threshold", min_score},
                 {"filter", filter()},
                 {"with_payload", {"imageId"}},
                 {"with_vector", false}};
    const size_t ef = std::max<size_t>(options.ef, store_.options_.hnsw_ef > 0 ? store_.options_.hnsw_ef : 0);
    if (ef > 0) body["params"]["hnsw_ef"] = ef;
    if (options.exact) body["params"]["exact"] = true;
    auto r = store_.call("POST", points_path("/query"), body);
    if (!r) {
      if (r.error().code == ErrorCode::kNotFound) return std::vector<SearchHit>{};
      if (r.error().code == ErrorCode::kInvalidArgument) return explain(std::move(r).error());
      return std::move(r).error().with("collection", target_.logical);
    }
    std::vector<SearchHit> hits;
    for (const auto& p : (*r)["points"]) {
      if (!p.contains("payload") || !p["payload"].is_object() || !p["payload"].contains("imageId")) continue;
      hits.push_back(SearchHit{p["payload"]["imageId"].get<std::string>(), p.value("score", 0.0f)});
    }
    return hits;
  }

 private:
  std::string points_path(const char* rest) const { return "/collections/" + target_.collection + "/points" + rest; }
  json filter(const json& extra = nullptr) const { return qdrant::tenant_filter(target_, extra); }

  // Our vectors were checked against dimension_, so Qdrant refusing them usually means the
  // collection was replaced by one of another dimension (another model or version): say so.
  Error explain(Error e) const {
    auto now = store_.collection_dimension(target_.collection);
    if (now && *now != 0 && *now != dimension_)
      return vectors_error(ErrorCode::kFailedPrecondition,
                           "Qdrant collection " + target_.collection + " now holds " + std::to_string(*now) +
                               "-d vectors, not " + std::to_string(dimension_) +
                               "-d: it was recreated by another model (or version); reindex into a new collection",
                           store_.options_.endpoint)
          .with("collection", target_.logical);
    return e.with("collection", target_.logical);
  }

  Status completed(const Result<json>& r, const char* what) const {
    if (!r) return Error(r.error()).with("collection", target_.logical);
    const std::string status = r->value("status", std::string());
    if (status == "completed") return {};
    return vectors_error(ErrorCode::kUnavailable,
                         std::string("Qdrant did not complete the ") + what + " (status '" + status + "')",
                         store_.options_.endpoint)
        .with("collection", target_.logical);
  }

  QdrantVectorStore& store_;
  const qdrant::Target target_;
  const size_t dimension_;
};

// ------------------------------------------------------------------------------------------------

std::unique_ptr<QdrantVectorStore> QdrantVectorStore::open(QdrantOptions options) {
  return std::unique_ptr<QdrantVectorStore>(new QdrantVectorStore(std::move(options)));
}

QdrantVectorStore::QdrantVectorStore(QdrantOptions options) : options_(std::move(options)) {}
QdrantVectorStore::~QdrantVectorStore() = default;

Result<json> QdrantVectorStore::call(const char* method, const std::string& path, const json& body) const {
  const std::string payload = body.is_null() ? std::string() : body.dump();
  ClientRequest req;
  req.method = method;
  req.url = options_.endpoint + path;
  if (!body.is_null()) req.headers.emplace_back("Content-Type", "application/json");
  if (!options_.api_key.empty()) req.headers.emplace_back("api-key", options_.api_key);
  req.body = payload;
  req.timeout = options_.timeout;
  req.connect_timeout = std::min(options_.timeout, std::chrono::milliseconds(3000));
  const std::string where = std::string(method) + " " + url_without_query(req.url);
  Error last;
  auto backoff = std::chrono::milliseconds(100);
  for (int attempt = 1; attempt <= std::max(1, options_.max_attempts); ++attempt) {
    if (attempt > 1) {
      std::this_thread::sleep_for(backoff);
      backoff *= 2;
    }
    auto res = http_.perform(req);
    if (!res) {
      const ErrorCode code = res.error().code;
      last = vectors_error(code == ErrorCode::kTimeout ? ErrorCode::kTimeout : ErrorCode::kUnavailable,
                           code == ErrorCode::kTimeout
                               ? "Qdrant did not answer within " + std::to_string(options_.timeout.count()) + " ms (" + where + ")"
                               : "Qdrant is unreachable: " + res.error().message,
                           options_.endpoint);
      if (code == ErrorCode::kTimeout || code == ErrorCode::kUnavailable) continue;
      return last;
    }
    const long status = res->status;
    if (status == 200) {
      auto j = json::parse(res->body, nullptr, false);
      if (j.is_discarded() || !j.is_object())
        return vectors_error(ErrorCode::kUnavailable, "Qdrant answered " + where + " with a body that is not JSON",
                             options_.endpoint);
      return j.contains("result") ? std::move(j["result"]) : json(nullptr);
    }
    const std::string text = qdrant::error_text(res->body);
    if (status == 429 || status >= 500) {
      last = vectors_error(ErrorCode::kUnavailable, "Qdrant answered " + std::to_string(status) + " to " + where + ": " + text,
                           options_.endpoint);
      continue;
    }
    if (status == 401 || status == 403)
      return vectors_error(ErrorCode::kUnavailable,
                           "Qdrant refused the api-key (" + std::to_string(status) + "): check vectors.qdrant.api_key",
                           options_.endpoint);
    if (status == 404) return vectors_error(ErrorCode::kNotFound, "Qdrant: " + text, options_.endpoint);
    return vectors_error(ErrorCode::kInvalidArgument,
                         "Qdrant rejected " + where + " (" + std::to_string(status) + "): " + text, options_.endpoint);
  }
  return last;
}

Result<size_t> QdrantVectorStore::collection_dimension(const std::string& collection) const {
  auto info = call("GET", "/collections/" + collection, nullptr);
  if (!info) {
    if (info.error().code == ErrorCode::kNotFound) return size_t{0};
    return std::move(info).error();
  }
  const json* vectors = nullptr;
  if (info->contains("config") && (*info)["config"].contains("params") && (*info)["config"]["params"].contains("vectors"))
    vectors = &(*info)["config"]["params"]["vectors"];
  if (!vectors || !vectors->is_object() || !vectors->contains("size") || !(*vectors)["size"].is_number_unsigned())
    return vectors_error(ErrorCode::kFailedPrecondition,
                         "Qdrant collection " + collection + " is not a DeepLens collection (no single unnamed vector)",
                         options_.endpoint)
        .with("collection", collection);
  return (*vectors)["size"].get<size_t>();
}

Status QdrantVectorStore::ensure_collection(const std::string& collection, size_t dimension) const {
  auto have = collection_dimension(collection);
  if (!have) return std::move(have).error();
  if (*have == 0) {
    const json body = {{"vectors", {{"size", dimension}, {"distance", "Cosine"}}},
                       {"hnsw_config", {{"m", options_.hnsw_m}, {"ef_construct", options_.hnsw_ef_construct}}}};
    auto created = call("PUT", "/collections/" + collection, body);
    // Another process may have created it first: read what is there.
    if (!created && created.error().code != ErrorCode::kInvalidArgument) return std::move(created).error();
    have = collection_dimension(collection);
    if (!have) return std::move(have).error();
    if (*have == 0) return std::move(created).error();
    log_info("qdrant.collection_created", {{"collection", collection}, {"dimension", static_cast<long long>(dimension)}});
  }
  if (*have != dimension)
    return vectors_error(ErrorCode::kFailedPrecondition,
                         "Qdrant collection " + collection + " holds " + std::to_string(*have) + "-d vectors, not " +
                             std::to_string(dimension) + "-d: it was built by another model (or version); reindex into a new collection",
                         options_.endpoint)
        .with("collection", collection);
  // Idempotent: also completes a collection whose creator died before indexing its payload.
  const bool payload = options_.multitenancy == qdrant::Multitenancy::kPayload;
  for (const auto& [field, tenant] : {std::pair{"tenantId", payload}, std::pair{"imageId", false}}) {
    json schema = {{"type", "keyword"}};
    if (tenant) schema["is_tenant"] = true;
    auto r = call("PUT", "/collections/" + collection + "/index?wait=true", {{"field_name", field}, {"field_schema", schema}});
    if (!r) return std::move(r).error().with("collection", collection);
  }
  return {};
}

QdrantVectorStore::Index* QdrantVectorStore::remember(const qdrant::Target& target, size_t dimension) {
  std::lock_guard lock(mu_);
  auto& slot = handles_[target.logical];
  if (!slot) slot = std::make_unique<Index>(*this, target, dimension);
  return slot.get();
}

Result<VectorIndex*> QdrantVectorStore::open_collection(const std::string& name, size_t dimension) {
  {
    std::lock_guard lock(mu_);
    if (auto it = handles_.find(name); it != handles_.end()) {
      if (it->second->dimension() == dimension) return static_cast<VectorIndex*>(it->second.get());
      return vectors_error(ErrorCode::kFailedPrecondition,
                           "collection " + name + " holds " + std::to_string(it->second->dimension()) + "-d vectors, not " +
                               std::to_string(dimension) + "-d",
                           options_.endpoint)
          .with("collection", name);
    }
  }
  auto target = qdrant::target_of(name, options_.multitenancy);
  if (!target) return std::move(target).error();
  if (dimension == 0) return Error(ErrorCode::kInvalidArgument, "a collection needs a dimension of at least 1");
  if (auto st = ensure_collection(target->collection, dimension); !st) return std::move(st).error().with("collection", name);
  return static_cast<VectorIndex*>(remember(*target, dimension));
}

Result<VectorIndex*> QdrantVectorStore::lookup_collection(const std::string& name) {
  {
    std::lock_guard lock(mu_);
    if (auto it = handles_.find(name); it != handles_.end()) return static_cast<VectorIndex*>(it->second.get());
  }
  auto target = qdrant::target_of(name, options_.multitenancy);
  if (!target) return static_cast<VectorIndex*>(nullptr);
  auto dimension = collection_dimension(target->collection);
  if (!dimension) return std::move(dimension).error().with("collection", name);
  if (*dimension == 0) return static_cast<VectorIndex*>(nullptr);
  return static_cast<VectorIndex*>(remember(*target, *dimension));
}

std::vector<CollectionStats> QdrantVectorStore::stats() const {
  std::vector<CollectionStats> out;
  auto listed = call("GET", "/collections", nullptr);
  if (!listed) {
    log_warn("qdrant.stats_failed", {{"error", listed.error().to_string()}});
    return out;
  }
  const bool payload = options_.multitenancy == qdrant::Multitenancy::kPayload;
  for (const auto& c : (*listed)["collections"]) {
    const std::string name = c.value("name", std::string());
    const std::string model = qdrant::model_of_shared(name);
    if (payload ? model.empty() : !qdrant::target_of(name, options_.multitenancy)) continue;
    auto dimension = collection_dimension(name);
    if (!dimension || *dimension == 0) continue;
    if (!payload) {
      auto counted = call("GET", "/collections/" + name, nullptr);
      if (counted) out.push_back({name, *dimension, counted->value("points_count", size_t{0})});
      continue;
    }
    auto facet = call("POST", "/collections/" + name + "/facet", {{"key", "tenantId"}, {"limit", 100000}, {"exact", true}});
    if (!facet) {
      log_warn("qdrant.stats_failed", {{"collection", name}, {"error", facet.error().to_string()}});
      continue;
    }
    for (const auto& hit : (*facet)["hits"])
      if (hit.contains("value") && hit["value"].is_string())
        out.push_back({"tenant_" + hit["value"].get<std::string>() + "_" + model + "_vectors", *dimension,
                       hit.value("count", size_t{0})});
  }
  return out;
}

Status QdrantVectorStore::ping() {
  auto r = call("GET", "/collections", nullptr);
  if (!r) return std::move(r).error();
  return {};
}

}  // namespace deeplens
