#include "app/settings.h"

#include <array>
#include <cstdlib>

#include "app/global_flags.h"

namespace deeplens::app {

namespace {
using enum ConfigType;

const std::array kKeys = {
    ConfigKeySpec{"data_dir", kString, "deeplens-data", "where the embedded backends keep their files (SQLite, blobs, vectors)"},
    ConfigKeySpec{"metadata.url", kString, "", "metadata + outbox: empty = SQLite file in data_dir; postgresql://USER@HOST:PORT/DB (needs the Kafka bus)"},
    ConfigKeySpec{"bus.url", kString, "", "event bus: empty = embedded log in SQLite; kafka://HOST:PORT[,HOST:PORT...] = Apache Kafka"},
    ConfigKeySpec{"blobs.url", kString, "", "image blobs: empty = files in data_dir/blobs; azure = Azure Blob Storage (account from blobs.azure.connection_string or AZURE_STORAGE_CONNECTION_STRING)"},
    ConfigKeySpec{"blobs.azure.connection_string", kString, "", "Azure: DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...[;BlobEndpoint=...] or UseDevelopmentStorage=true; empty = AZURE_STORAGE_CONNECTION_STRING"},
    ConfigKeySpec{"blobs.azure.single_put_max_bytes", kInt, "4194304", "Azure: larger blobs are uploaded in blocks (Put Block + Put Block List)"},
    ConfigKeySpec{"blobs.azure.block_bytes", kInt, "4194304", "Azure: size of one block of a block upload"},
    ConfigKeySpec{"blobs.azure.timeout_ms", kInt, "30000", "Azure: one request, connect to last byte"},
    ConfigKeySpec{"blobs.azure.max_attempts", kInt, "4", "Azure: tries per operation on connection errors, timeouts, 408/429/5xx (backoff 100 ms, doubling)"},
    ConfigKeySpec{"vectors.url", kString, "", "vector index: empty = embedded HNSW in data_dir/vectors (one process); qdrant+http://HOST:6333 or qdrant+https://... = Qdrant (any number of processes)"},
    ConfigKeySpec{"vectors.qdrant.api_key", kString, "", "Qdrant: the api-key header; empty = QDRANT_API_KEY, or none"},
    ConfigKeySpec{"vectors.qdrant.multitenancy", kString, "collection", "Qdrant: collection = one collection per tenant and model (the spec's names); payload = one per model, every query filtered by tenant (many tenants)"},
    ConfigKeySpec{"vectors.qdrant.timeout_ms", kInt, "5000", "Qdrant: one request, connect to last byte"},
    ConfigKeySpec{"vectors.qdrant.max_attempts", kInt, "3", "Qdrant: tries per request on connection errors, timeouts, 429/5xx (backoff 100 ms, doubling)"},
    ConfigKeySpec{"vectors.qdrant.hnsw_m", kInt, "16", "Qdrant: HNSW m of collections DeepLens creates"},
    ConfigKeySpec{"vectors.qdrant.hnsw_ef_construct", kInt, "100", "Qdrant: HNSW ef_construct of collections DeepLens creates"},
    ConfigKeySpec{"vectors.ef_search", kInt, "64", "embedded index: HNSW search beam up to 250k vectors per collection (a search may ask for more with `ef`)"},
    ConfigKeySpec{"vectors.ef_grows_with_size", kBool, "true", "embedded index: past 250k vectors search with ef_search * (1 + log2(size / 250k) / 2) (2x at 1M), so recall holds as a collection grows"},
    ConfigKeySpec{"vectors.qdrant.hnsw_ef", kInt, "0", "Qdrant: search beam (params.hnsw_ef); 0 = Qdrant's default"},
    ConfigKeySpec{"bus.partitions", kInt, "8", "Kafka: partitions per topic when DeepLens creates the topics"},
    ConfigKeySpec{"bus.replication", kInt, "3", "Kafka: replication factor when DeepLens creates the topics"},
    ConfigKeySpec{"bus.retention_s", kInt, "21600", "embedded log: keep events at least this long, and until every group consumed them (a stage that joins later reads them)"},
    ConfigKeySpec{"server.listen", kString, "127.0.0.1:8080", "HTTP address HOST:PORT (port 0 picks a free port)"},
    ConfigKeySpec{"server.threads", kInt, "16", "HTTP handler threads (handlers block on fsync: size for concurrent uploads, not cores)"},
    ConfigKeySpec{"server.queue", kInt, "1024", "requests waiting for a handler thread; past it 503 SERVER_BUSY"},
    ConfigKeySpec{"server.io_threads", kInt, "2", "threads reading and writing sockets (they never run a blocking handler)"},
    ConfigKeySpec{"server.query_threads", kInt, "16", "threads for searches by image (decode, then wait for a batched model forward)"},
    ConfigKeySpec{"server.query_queue", kInt, "48", "searches by image waiting for a query thread; past it 503 SERVER_BUSY"},
    ConfigKeySpec{"search.query_batch", kInt, "16", "searches by image in flight together share one model forward of at most this many images"},
    ConfigKeySpec{"server.max_body_bytes", kInt, "67108864", "largest request body (uploads are streamed to disk)"},
    ConfigKeySpec{"server.header_timeout_s", kInt, "10", "seconds to receive request headers"},
    ConfigKeySpec{"server.body_timeout_s", kInt, "120", "seconds to receive a request body"},
    ConfigKeySpec{"server.max_connections", kInt, "4096", "open connections at once; past it new ones are closed at accept"},
    ConfigKeySpec{"server.max_connections_per_client", kInt, "256", "open connections at once from one client address"},
    ConfigKeySpec{"push.history_events", kInt, "10000", "real-time: events kept per tenant for clients that resume with since / Last-Event-ID"},
    ConfigKeySpec{"push.history_s", kInt, "600", "real-time: seconds events are kept for resuming (older: the client gets a reset)"},
    ConfigKeySpec{"push.max_connections_per_tenant", kInt, "1000", "real-time: WebSocket + event-stream connections open at once per tenant"},
    ConfigKeySpec{"push.max_subscriptions_per_connection", kInt, "100", "real-time: subscriptions one WebSocket may hold"},
    ConfigKeySpec{"push.send_queue_bytes", kInt, "4194304", "real-time: unsent bytes per connection; a client that lets more pile up is closed (1008)"},
    ConfigKeySpec{"push.ping_interval_s", kInt, "25", "real-time: WebSocket ping after this many seconds of silence; no answer within as long closes it"},
    ConfigKeySpec{"push.sse_heartbeat_s", kInt, "15", "real-time: seconds between keep-alive comments on an event stream"},
    ConfigKeySpec{"webhooks.enabled", kBool, "true", "webhooks: run the dispatcher and the /api/v1/webhooks routes in serve/api"},
    ConfigKeySpec{"webhooks.max_per_tenant", kInt, "50", "webhooks: endpoints one tenant may register"},
    ConfigKeySpec{"webhooks.timeout_s", kInt, "10", "webhooks: seconds for one attempt, connect to last byte (2xx within it = delivered)"},
    ConfigKeySpec{"webhooks.retry_schedule_s", kList, "5,300,1800,7200,18000,36000,50400,72000,86400", "webhooks: seconds before each retry (with +-20% jitter); after the last the delivery fails"},
    ConfigKeySpec{"webhooks.disable_after_s", kInt, "432000", "webhooks: an endpoint failing continuously this long is disabled"},
    ConfigKeySpec{"webhooks.concurrency", kInt, "16", "webhooks: deliveries in flight at once per process"},
    ConfigKeySpec{"webhooks.per_endpoint_concurrency", kInt, "4", "webhooks: deliveries in flight at once per endpoint (all processes)"},
    ConfigKeySpec{"webhooks.allow_private_networks", kBool, "false", "webhooks: allow urls on loopback, private, link-local and metadata addresses"},
    ConfigKeySpec{"webhooks.retention_s", kInt, "2592000", "webhooks: succeeded and failed deliveries stay in the delivery log this long"},
    ConfigKeySpec{"webhooks.secret_overlap_s", kInt, "86400", "webhooks: after a rotation the old secret also signs for this long"},
    ConfigKeySpec{"webhooks.secrets_key_file", kString, "", "webhooks: key that seals secrets at rest (base64 of 32 bytes; created if absent); empty = data_dir/webhook-secrets.key. Share it between api processes"},
    ConfigKeySpec{"upload.max_bytes", kInt, "52428800", "largest image file accepted"},
    ConfigKeySpec{"upload.max_pixels", kInt, "100000000", "largest width*height accepted (decompression bombs are refused from the header)"},
    ConfigKeySpec{"upload.max_edge", kInt, "30000", "longest image side accepted, in pixels"},
    ConfigKeySpec{"pipeline.max_attempts", kInt, "3", "attempts per stage before an image fails (retryPolicy.maxAttempts)"},
    ConfigKeySpec{"pipeline.backoff_ms", kInt, "1000", "first retry delay; doubles each attempt (retryPolicy.backoffMs)"},
    ConfigKeySpec{"pipeline.extract_workers", kInt, "1", "extraction consumer threads"},
    ConfigKeySpec{"pipeline.extract_batch", kInt, "8", "images per batched model forward"},
    ConfigKeySpec{"pipeline.index_workers", kInt, "1", "indexing consumer threads"},
    ConfigKeySpec{"pipeline.priority_weights", kList, "6,3,1", "shares of the high, normal and low lanes in orchestration and extraction (each >= 1): low gets at least 1/10 at 6,3,1"},
    ConfigKeySpec{"limits.max_images", kInt, "0", "default per-tenant limit of images stored (0 = unlimited; `tenants update --max-images`)"},
    ConfigKeySpec{"limits.max_bytes", kInt, "0", "default per-tenant limit of original-image bytes stored (0 = unlimited)"},
    ConfigKeySpec{"limits.upload_rate", kDouble, "0", "default per-tenant uploads per second (token bucket; 0 = unlimited)"},
    ConfigKeySpec{"limits.search_rate", kDouble, "0", "default per-tenant searches per second (0 = unlimited)"},
    ConfigKeySpec{"sweep.grace_s", kInt, "3600", "orphan sweeper: blobs and spool files younger than this are never touched"},
    ConfigKeySpec{"sweep.interval_s", kInt, "3600", "orphan sweeper: seconds between passes (one also runs at start)"},
    ConfigKeySpec{"auth.default_tenant", kString, "default", "tenant created on first start"},
    ConfigKeySpec{"auth.default_key", kString, "", "API key for the default tenant (else one is generated and printed once)"},
    ConfigKeySpec{"log.level", kString, "info", "debug, info, warn or error"},
    ConfigKeySpec{"log.format", kString, "json", "json (one object per line) or text"},
};
}  // namespace

std::span<const ConfigKeySpec> config_keys() { return kKeys; }

std::vector<std::string> config_sections() { return {"models"}; }

Result<Config> load_config(const GlobalFlags& flags) {
  ConfigSources sources;
  std::string file = flags.config_file;
  if (file.empty()) {
    if (const char* env = std::getenv("DEEPLENS_CONFIG")) file = env;
  }
  if (!file.empty()) sources.file = file;
  sources.environment = Config::process_environment();
  sources.environment.erase("DEEPLENS_CONFIG");
  sources.overrides = flags.overrides;
  if (!flags.data_dir.empty()) sources.overrides.insert(sources.overrides.begin(), "data_dir=" + flags.data_dir);
  sources.section_names = config_sections();
  sources.passthrough_prefixes = {"kafka."};
  return Config::load(config_keys(), sources);
}


Result<LogOptions> log_options(const Config& config) {
  LogOptions out;
  if (!parse_log_level(config.str("log.level"), out.level))
    return Error(ErrorCode::kInvalidArgument,
                 "config key 'log.level' (" + config.origin("log.level") +
                     "): expected debug, info, warn or error, got '" + config.str("log.level") + "'")
        .with("key", "log.level");
  const auto& format = config.str("log.format");
  if (format != "json" && format != "text")
    return Error(ErrorCode::kInvalidArgument, "config key 'log.format' (" + config.origin("log.format") +
                                                  "): expected json or text, got '" + format + "'")
        .with("key", "log.format");
  out.json = format == "json";
  return out;
}

}  // namespace deeplens::app
