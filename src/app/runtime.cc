#include "app/runtime.h"

#include <charconv>
#include <iostream>

#include "app/models.h"
#include "app/settings.h"
#include "common/log.h"
#include "common/sha256.h"
#include "events/topics.h"
#include "imaging/image.h"

namespace deeplens::app {

ImageLimits image_limits(const Config& c) {
  ImageLimits l;
  l.max_bytes = c.integer("upload.max_bytes");
  l.max_pixels = c.integer("upload.max_pixels");
  l.max_edge = static_cast<int>(c.integer("upload.max_edge"));
  return l;
}

api::HttpServerOptions server_options(const Config& c) {
  api::HttpServerOptions o;
  o.listen = c.str("server.listen");
  o.threads = static_cast<int>(c.integer("server.threads"));
  o.queue = static_cast<int>(c.integer("server.queue"));
  o.io_threads = static_cast<int>(c.integer("server.io_threads"));
  o.query_threads = static_cast<int>(c.integer("server.query_threads"));
  o.query_queue = static_cast<int>(c.integer("server.query_queue"));
  o.max_body_bytes = static_cast<uint64_t>(c.integer("server.max_body_bytes"));
  o.header_timeout = std::chrono::seconds(c.integer("server.header_timeout_s"));
  o.body_timeout = std::chrono::seconds(c.integer("server.body_timeout_s"));
  o.spool_dir = std::filesystem::path(c.str("data_dir")) / "spool";
  o.max_connections = static_cast<int>(c.integer("server.max_connections"));
  o.max_connections_per_client = static_cast<int>(c.integer("server.max_connections_per_client"));
  o.stream_queue_bytes = static_cast<uint64_t>(c.integer("push.send_queue_bytes"));
  o.ws_ping_interval = std::chrono::seconds(std::max<int64_t>(1, c.integer("push.ping_interval_s")));
  return o;
}

api::PushHubOptions push_options(const Config& c) {
  api::PushHubOptions o;
  o.history_events = static_cast<size_t>(std::max<int64_t>(0, c.integer("push.history_events")));
  o.history_age = std::chrono::seconds(c.integer("push.history_s"));
  o.max_connections_per_tenant = static_cast<int>(c.integer("push.max_connections_per_tenant"));
  o.max_subscriptions_per_connection = static_cast<int>(c.integer("push.max_subscriptions_per_connection"));
  return o;
}

webhooks::DispatcherOptions dispatcher_options(const Config& c) {
  webhooks::DispatcherOptions o;
  o.timeout = std::chrono::seconds(std::max<int64_t>(1, c.integer("webhooks.timeout_s")));
  o.schedule.clear();
  for (const auto& item : c.list("webhooks.retry_schedule_s")) {
    double seconds = 0;
    try {
      seconds = std::stod(item);
    } catch (...) {
      seconds = -1;
    }
    if (seconds < 0) throw std::runtime_error("webhooks.retry_schedule_s: '" + item + "' is not a number of seconds");
    o.schedule.push_back(std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  }
  o.disable_after = std::chrono::seconds(std::max<int64_t>(1, c.integer("webhooks.disable_after_s")));
  o.concurrency = static_cast<int>(std::max<int64_t>(1, c.integer("webhooks.concurrency")));
  o.per_endpoint = static_cast<int>(std::max<int64_t>(1, c.integer("webhooks.per_endpoint_concurrency")));
  o.allow_private_networks = c.boolean("webhooks.allow_private_networks");
  o.retention = std::chrono::seconds(std::max<int64_t>(1, c.integer("webhooks.retention_s")));
  o.user_agent = std::string("DeepLens/") + DEEPLENS_VERSION;
  return o;
}

api::ApiOptions api_options(const Config& c, const ModelRegistry& models) {
  api::ApiOptions o;
  o.default_model = models.default_model();
  o.models = models.names();
  o.limits = image_limits(c);
  o.tenant_limits.max_images = c.integer("limits.max_images");
  o.tenant_limits.max_bytes = c.integer("limits.max_bytes");
  o.tenant_limits.upload_rate = c.number("limits.upload_rate");
  o.tenant_limits.search_rate = c.number("limits.search_rate");
  o.push_heartbeat = std::chrono::seconds(std::max<int64_t>(1, c.integer("push.sse_heartbeat_s")));
  o.query_batch = static_cast<size_t>(std::max<int64_t>(1, c.integer("search.query_batch")));
  return o;
}

bool valid_tenant_slug(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0);
    if (!ok) return false;
  }
  return true;
}

Result<std::optional<QdrantOptions>> qdrant_options(const Config& c) {
  const std::string url = c.str("vectors.url");
  if (url.empty()) return std::optional<QdrantOptions>();
  auto endpoint = qdrant::endpoint_of(url);
  if (!endpoint) {
    Error e = std::move(endpoint).error();
    e.message = "config key 'vectors.url' (" + c.origin("vectors.url") + "): " + e.message;
    return e;
  }
  auto mode = qdrant::parse_multitenancy(c.str("vectors.qdrant.multitenancy"));
  if (!mode) return std::move(mode).error();
  QdrantOptions o;
  o.endpoint = std::move(endpoint).value();
  o.multitenancy = *mode;
  o.api_key = c.str("vectors.qdrant.api_key");
  if (o.api_key.empty())
    if (const char* env = std::getenv("QDRANT_API_KEY")) o.api_key = env;
  o.timeout = std::chrono::milliseconds(std::max<int64_t>(1, c.integer("vectors.qdrant.timeout_ms")));
  o.max_attempts = static_cast<int>(std::max<int64_t>(1, c.integer("vectors.qdrant.max_attempts")));
  o.hnsw_m = static_cast<int>(c.integer("vectors.qdrant.hnsw_m"));
  o.hnsw_ef_construct = static_cast<int>(c.integer("vectors.qdrant.hnsw_ef_construct"));
  o.hnsw_ef = static_cast<int>(c.integer("vectors.qdrant.hnsw_ef"));
  return std::optional<QdrantOptions>(std::move(o));
}

Result<std::optional<AzureBlobOptions>> azure_blob_options(const Config& c) {
  const std::string url = c.str("blobs.url");
  if (url.empty() || url == "local") return std::optional<AzureBlobOptions>();
  const bool endpoint = url.rfind("http://", 0) == 0 || url.rfind("https://", 0) == 0;
  if (url != "azure" && !endpoint)
    return Error(ErrorCode::kInvalidArgument, "config key 'blobs.url' (" + c.origin("blobs.url") +
                                                  "): expected empty (local files), azure, or the blob endpoint URL, got '" +
                                                  redact_secrets(url) + "'")
        .with("key", "blobs.url");
  std::string text = c.str("blobs.azure.connection_string");
  std::string origin = "blobs.azure.connection_string (" + c.origin("blobs.azure.connection_string") + ")";
  if (text.empty()) {
    if (const char* env = std::getenv("AZURE_STORAGE_CONNECTION_STRING")) text = env;
    origin = "AZURE_STORAGE_CONNECTION_STRING";
  }
  if (text.empty())
    return Error(ErrorCode::kInvalidArgument,
                 "blobs.url is '" + url + "' but no Azure account is configured: set blobs.azure.connection_string or "
                 "AZURE_STORAGE_CONNECTION_STRING")
        .with("key", "blobs.azure.connection_string");
  auto account = azure::parse_connection_string(text);
  if (!account) {
    Error e = std::move(account).error();
    e.message = origin + ": " + e.message;
    return e;
  }
  AzureBlobOptions o;
  o.account = std::move(account).value();
  if (endpoint) {
    o.account.endpoint = url;
    while (!o.account.endpoint.empty() && o.account.endpoint.back() == '/') o.account.endpoint.pop_back();
  }
  o.spool_dir = std::filesystem::path(c.str("data_dir")) / "spool";
  o.single_put_max = c.integer("blobs.azure.single_put_max_bytes");
  o.block_size = c.integer("blobs.azure.block_bytes");
  o.timeout = std::chrono::milliseconds(std::max<int64_t>(1, c.integer("blobs.azure.timeout_ms")));
  o.connect_timeout = std::min(o.timeout, std::chrono::milliseconds(3000));
  o.max_attempts = static_cast<int>(std::max<int64_t>(1, c.integer("blobs.azure.max_attempts")));
  return std::optional<AzureBlobOptions>(std::move(o));
}

Result<std::optional<KafkaBusOptions>> kafka_options(const Config& c) {
  const std::string url = c.str("bus.url");
  if (url.empty() || url == "sqlite" || url == "embedded") return std::optional<KafkaBusOptions>();
  const std::string scheme = "kafka://";
  if (url.compare(0, scheme.size(), scheme) != 0 || url.size() == scheme.size())
    return Error(ErrorCode::kInvalidArgument, "config key 'bus.url' (" + c.origin("bus.url") +
                                                  "): expected kafka://HOST:PORT[,HOST:PORT...] or empty for the embedded log, got '" +
                                                  url + "'")
        .with("key", "bus.url");
  KafkaBusOptions o;
  o.bootstrap_servers = url.substr(scheme.size());
  while (!o.bootstrap_servers.empty() && o.bootstrap_servers.back() == '/') o.bootstrap_servers.pop_back();
  for (const auto& [k, v] : c.passthrough("kafka.")) {
    if (k.rfind("producer.", 0) == 0) o.producer_settings[k.substr(9)] = v;
    else if (k.rfind("consumer.", 0) == 0) o.consumer_settings[k.substr(9)] = v;
    else o.settings[k] = v;
  }
  for (auto t : topics::kAll) o.topics.emplace_back(t);
  o.partitions = static_cast<int>(c.integer("bus.partitions"));
  o.replication_factor = static_cast<int>(c.integer("bus.replication"));
  return std::optional<KafkaBusOptions>(std::move(o));
}

Result<std::unique_ptr<Runtime>> open_runtime(const GlobalFlags& flags, Role role, const StageSet& stages) {
  auto config = load_config(flags);
  if (!config) return std::move(config).error();
  auto logging = log_options(*config);
  if (!logging) return std::move(logging).error();
  init_logging(*logging);
  auto rt = std::make_unique<Runtime>(std::move(config).value());
  const Config& c = rt->config;
  for (const char* key : {"sweep.interval_s", "server.threads", "server.io_threads", "server.query_threads", "upload.max_bytes", "upload.max_pixels", "upload.max_edge",
                          "pipeline.max_attempts", "pipeline.extract_workers", "pipeline.extract_batch",
                          "pipeline.index_workers"})
    if (c.integer(key) < 1)
      return Error(ErrorCode::kInvalidArgument, std::string("config key '") + key + "' (" + c.origin(key) + "): must be >= 1")
          .with("key", key);

  NodeOptions o;
  o.data_dir = c.str("data_dir");
  o.bus.retention = std::chrono::seconds(c.integer("bus.retention_s"));
  o.pipeline.retry = RetryPolicy{static_cast<int>(c.integer("pipeline.max_attempts")), c.integer("pipeline.backoff_ms"), 1};
  o.pipeline.limits = image_limits(c);
  o.run.extract_members = static_cast<int>(c.integer("pipeline.extract_workers"));
  o.run.index_members = static_cast<int>(c.integer("pipeline.index_workers"));
  o.run.extract_batch = static_cast<size_t>(c.integer("pipeline.extract_batch"));
  {
    const auto weights = c.list("pipeline.priority_weights");
    auto bad = [&](const std::string& why) {
      return Error(ErrorCode::kInvalidArgument, "config key 'pipeline.priority_weights' (" +
                                                    c.origin("pipeline.priority_weights") + "): " + why)
          .with("key", "pipeline.priority_weights");
    };
    if (weights.size() != 3) return bad("expected three weights, high,normal,low (e.g. 6,3,1)");
    for (size_t i = 0; i < 3; ++i) {
      int w = 0;
      const auto [end, ec] = std::from_chars(weights[i].data(), weights[i].data() + weights[i].size(), w);
      if (ec != std::errc() || end != weights[i].data() + weights[i].size() || w < 1 || w > 1000)
        return bad("each weight must be a whole number from 1 to 1000, got '" + weights[i] + "'");
      o.pipeline.lane_weights[i] = w;
    }
  }
  ModelLookup lookup = [](const std::string&) -> Extractor* { return nullptr; };
  auto kafka = kafka_options(c);
  if (!kafka) return std::move(kafka).error();
  o.kafka = std::move(kafka).value();
  auto azure = azure_blob_options(c);
  if (!azure) return std::move(azure).error();
  o.azure_blobs = std::move(azure).value();
  auto qdrant = qdrant_options(c);
  if (!qdrant) return std::move(qdrant).error();
  o.qdrant = std::move(qdrant).value();
  o.hnsw.ef_search = static_cast<size_t>(std::max<int64_t>(1, c.integer("vectors.ef_search")));
  o.hnsw.ef_grows_with_size = c.boolean("vectors.ef_grows_with_size");
  o.run.stages = stages;
  const std::string metadata = c.str("metadata.url");
  if (!metadata.empty()) {
    if (metadata.rfind("postgresql://", 0) != 0 && metadata.rfind("postgres://", 0) != 0)
      return Error(ErrorCode::kInvalidArgument, "config key 'metadata.url' (" + c.origin("metadata.url") +
                                                    "): expected postgresql://... or empty for SQLite, got '" + redact_secrets(metadata) + "'")
          .with("key", "metadata.url");
    o.postgres_url = metadata;
  }
  if (role == Role::kServe) o.run.stages = StageSet{};
  if (role == Role::kServe || role == Role::kApi) {
    SweeperOptions so;
    so.grace = std::chrono::seconds(c.integer("sweep.grace_s"));
    so.interval = std::chrono::seconds(c.integer("sweep.interval_s"));
    so.spool_dir = std::filesystem::path(c.str("data_dir")) / "spool";
    o.sweeper = so;
  }
  // The embedded index is one process's (it locks its folder): the one that runs the index stage.
  // Qdrant is shared: every api serves search, every worker with the index stage writes.
  o.open_vectors = role == Role::kServe || ((role == Role::kApi || role == Role::kWorker) && o.run.stages.index) ||
                   (o.qdrant && role == Role::kApi);
  o.connect_bus = role != Role::kOperator;
  if (role != Role::kOperator) {
    if (auto st = init_imaging(); !st) return std::move(st).error();
    ModelRegistryOptions mo;
    std::string file = flags.config_file;
    if (file.empty())
      if (const char* env = std::getenv("DEEPLENS_CONFIG")) file = env;
    if (!file.empty()) mo.base_dir = std::filesystem::path(file).parent_path();
    auto models = build_model_registry(c.sections("models"), mo);
    if (!models) return std::move(models).error();
    rt->models = std::move(models).value();
    for (const auto& name : rt->models->names())
      if (const ModelSpec* spec = rt->models->spec(name)) o.pipeline.duplicate_thresholds[name] = spec->duplicate_threshold;
    lookup = [reg = rt->models.get()](const std::string& name) { return reg->find(name); };
  } else {
    o.open_vectors = false;
  }
  if (o.kafka) log_info("bus.kafka", {{"bootstrap", o.kafka->bootstrap_servers}});
  auto node = Node::open(o, std::move(lookup), rt->clock, rt->random);
  if (!node) return std::move(node).error();
  rt->node = std::move(node).value();
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(c.str("data_dir")) / "spool", ec);
  return rt;
}

std::unique_ptr<Runtime> open_operator_runtime(const GlobalFlags& flags, int* exit_code) {
  auto rt = open_runtime(flags, Role::kOperator);
  if (!rt) {
    std::cerr << "error: " << rt.error().message << "\n";
    *exit_code = 2;
    return nullptr;
  }
  return std::move(rt).value();
}

Result<std::string> ensure_default_tenant(Runtime& rt) {
  const std::string tenant = rt.config.str("auth.default_tenant");
  if (!valid_tenant_slug(tenant))
    return Error(ErrorCode::kInvalidArgument, "config key 'auth.default_tenant': '" + tenant +
                                                  "' is not a valid tenant slug ([a-z0-9-], at most 63 characters)")
        .with("key", "auth.default_tenant");
  auto& store = rt.node->store();
  // Create, not read-then-create: of processes starting together on a fresh store exactly one
  // creates the tenant (and prints its key); the others find it exists, which is fine.
  bool created = true;
  if (auto st = store.create_tenant(Tenant{tenant, rt.clock.now(), {}, 0, 0}); !st) {
    if (st.error().code != ErrorCode::kAlreadyExists) return std::move(st).error();
    created = false;
  }
  const std::string configured = rt.config.str("auth.default_key");
  if (!configured.empty()) {
    const ApiKey record = api::api_key_record(rt.node->ids(), tenant, configured, "auth.default_key", rt.clock.now());
    if (auto st = store.add_api_key(record, sha256_hex(configured)); !st) return std::move(st).error();
    return std::string();
  }
  if (!created) return std::string();
  auto key = api::create_api_key(store, rt.node->ids(), tenant, "default", rt.clock.now());
  if (!key) return std::move(key).error();
  return key->secret;
}

}  // namespace deeplens::app
