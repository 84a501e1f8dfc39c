#include "app/node.h"

#include "common/log.h"
#include "store/postgres/postgres_metadata_store.h"
#include "events/topics.h"
#include "pipeline/collection_migration.h"

namespace deeplens::app {

namespace {

// Stands in for the vector store in processes that do not open it (operator CLI commands).
class NoVectors final : public VectorStore {
 public:
  Result<VectorIndex*> open_collection(const std::string&, size_t) override {
    return Error(ErrorCode::kFailedPrecondition, "this process does not open the vector store");
  }
  Result<VectorIndex*> lookup_collection(const std::string&) override { return static_cast<VectorIndex*>(nullptr); }
  std::vector<CollectionStats> stats() const override { return {}; }
  Status checkpoint() override { return {}; }
};

}  // namespace

Result<std::unique_ptr<Node>> Node::open(const NodeOptions& options, ModelLookup models, const Clock& clock,
                                         RandomSource& random) {
  std::unique_ptr<Node> node(new Node(options, random));
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec)
    return Error(ErrorCode::kIoError, "cannot create data directory: " + ec.message())
        .with("path", options.data_dir.string());

  const bool postgres = !options.postgres_url.empty();
  if (postgres && !options.kafka)
    return Error(ErrorCode::kInvalidArgument,
                 "metadata.url postgresql://... needs bus.url kafka://... (the embedded event log lives in SQLite)")
        .with("key", "metadata.url");
  if (!postgres) {
    auto db = SqliteDatabase::open(options.data_dir / "deeplens.db");
    if (!db) return std::move(db).error();
    node->db_ = std::move(db).value();
  }
  LogAppender appender;
  if (options.kafka && !options.connect_bus) {
    // Operator commands on a Kafka deployment: events they cause wait in the outbox for a relay.
  } else if (options.kafka) {
    auto kafka = KafkaBus::open(*options.kafka);
    if (!kafka) return std::move(kafka).error();
    node->kafka_bus_ = std::move(kafka).value();
    node->bus_ = node->kafka_bus_.get();
  } else {
    auto bus = SqliteLogBus::open(*node->db_, clock, random, options.bus);
    if (!bus) return std::move(bus).error();
    node->log_bus_ = std::move(bus).value();
    node->bus_ = node->log_bus_.get();
    appender = [raw = node->log_bus_.get()](SqliteConnection& c, const OutboxMessage& m) { return raw->append(c, m); };
  }
  if (postgres) {
    auto store = PostgresMetadataStore::open(options.postgres_url, clock);
    if (!store) return std::move(store).error();
    node->store_ = std::move(store).value();
  } else {
    auto store = SqliteMetadataStore::open(*node->db_, clock, std::move(appender));
    if (!store) return std::move(store).error();
    node->store_ = std::move(store).value();
  }
  if (options.kafka && options.connect_bus && options.run_relay) {
    OutboxRelayOptions ro;
    if (postgres) ro.idle_poll = std::chrono::milliseconds(20);  // no in-process commit hook to wake it
    node->relay_ = std::make_unique<OutboxRelay>(*node->store_, *node->bus_, node->metrics_, ro);
    if (node->db_) node->db_->add_commit_listener([relay = node->relay_.get()] { relay->notify(); });
    if (auto st = node->relay_->start(); !st) return std::move(st).error();
  }
  if (options.azure_blobs) {
    auto blobs = AzureBlobStore::open(*options.azure_blobs, random);
    if (!blobs) return std::move(blobs).error();
    node->blobs_ = std::move(blobs).value();
    log_info("blobs.azure", {{"account", options.azure_blobs->account.name}, {"endpoint", options.azure_blobs->account.endpoint}});
  } else {
    auto blobs = LocalBlobStore::open(options.data_dir / "blobs", random);
    if (!blobs) return std::move(blobs).error();
    node->blobs_ = std::move(blobs).value();
  }
  if (options.open_vectors && options.qdrant) {
    node->vectors_ = QdrantVectorStore::open(*options.qdrant);
    log_info("vectors.qdrant", {{"endpoint", options.qdrant->endpoint},
                                {"multitenancy", options.qdrant->multitenancy == qdrant::Multitenancy::kPayload ? "payload" : "collection"}});
    if (auto st = node->vectors_->ping(); !st)
      log_warn("vectors.unavailable", {{"error", st.error().to_string()}});  // uploads are still accepted
  } else if (options.open_vectors) {
    const auto t0 = std::chrono::steady_clock::now();
    auto vectors = HnswVectorStore::open((options.data_dir / "vectors").string(), options.hnsw);
    if (!vectors) return std::move(vectors).error();
    (*vectors)->start();  // background checkpoints keep restart replay short
    node->vectors_ = std::move(vectors).value();
    log_info("vectors.opened", {{"ms", static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                   std::chrono::steady_clock::now() - t0)
                                                                   .count())}});
  } else {
    node->vectors_ = std::make_unique<NoVectors>();
  }
  if (options.open_vectors && !options.qdrant)  // names were injective before Qdrant came
    if (auto moved = migrate_collection_names(*node->store_, *node->vectors_); !moved)
      return std::move(moved).error().with("during", "renaming vector collections (legacy names)");
  node->register_gauges();
  node->context_.reset(new PipelineContext{*node->store_, *node->blobs_, *node->vectors_, std::move(models), clock,
                                           node->ids_, node->metrics_, options.pipeline});
  return node;
}

Node::~Node() {
  stop();
  relay_.reset();  // before the bus it publishes to
  if (kafka_bus_) kafka_bus_->stop();
}

void Node::register_gauges() {
  metrics_.describe("deeplens_queue_depth", "gauge", "events not yet consumed, per stage (consumer group)");
  metrics_.describe("deeplens_lane_depth", "gauge", "events not yet consumed, per stage and priority lane");
  metrics_.describe("deeplens_index_vectors", "gauge", "vectors per collection");
  metrics_.describe("deeplens_images", "gauge", "images by status");
  metrics_.add_collector([this](Metrics& m) {
    for (const auto& queue : stage_queues()) {
      if (!bus_) break;
      int64_t total = 0;
      bool known = true;
      for (const auto& topic : queue.topics) {
        auto lag = bus_->lag(queue.group, {topic});
        if (!lag || *lag < 0) {
          known = false;
          continue;
        }
        total += *lag;
        if (queue.laned())
          m.set("deeplens_lane_depth", {{"group", queue.group}, {"lane", priority_name(lane_of(topic))}},
                static_cast<double>(*lag));
      }
      if (known) m.set("deeplens_queue_depth", {{"group", queue.group}}, static_cast<double>(total));
    }
    if (vectors_)
      for (const auto& c : vectors_->stats())
        m.set("deeplens_index_vectors", {{"collection", c.name}}, static_cast<double>(c.count));
    if (store_)
      if (auto counts = store_->count_by_status())
        for (const auto& [status, n] : *counts) m.set("deeplens_images", {{"status", status}}, static_cast<double>(n));
  });
}

Status Node::start_pipeline() {
  if (!bus_) return Error(ErrorCode::kFailedPrecondition, "this process has no event bus");
  checkpointed_ = false;
  if (relay_)  // stop() stopped it with the stages; a no-op when it is running
    if (auto st = relay_->start(); !st) return st;
  pipeline_ = std::make_unique<Pipeline>(*bus_, *context_, options_.run);
  if (auto st = pipeline_->start(); !st) return st;
  if (options_.sweeper) {
    SweeperOptions so = *options_.sweeper;
    so.sweep_vectors = so.sweep_vectors && options_.open_vectors;
    sweeper_ = std::make_unique<Sweeper>(*context_, so);
    sweeper_->start();
  }
  return {};
}

void Node::stop() {
  if (sweeper_) sweeper_->stop();
  sweeper_.reset();
  if (pipeline_) pipeline_->stop();
  pipeline_.reset();
  if (relay_) relay_->stop();
  if (vectors_ && !checkpointed_) {
    checkpointed_ = true;
    if (auto st = vectors_->checkpoint(); !st) log_warn("vectors.checkpoint_failed", {{"error", st.error().to_string()}});
  }
}

}  // namespace deeplens::app
