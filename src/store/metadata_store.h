// MetadataStore: the system of record — tenants and API keys, images and their processing steps,
// the outbox of events to publish, dead letters, scheduled retries and the ids of events already
// processed (idempotency). Every pipeline effect on metadata happens inside transact(), together
// with the events it causes (transactional outbox), so a crash never leaves a state change without
// its event or an event without its state change.
//
// Implementations: sqlite/ (embedded default, WAL) and postgres/ (at scale).
// Thread-safety: all methods may be called from any thread; transactions are serialisable.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "store/webhook_store.h"

namespace deeplens {

using Headers = std::vector<std::pair<std::string, std::string>>;

// Headers as stored in SQL columns: a JSON array of [name, value] pairs.
std::string headers_to_json(const Headers& headers);
Headers headers_from_json(const std::string& text);

// An event waiting to be published to the bus.
struct OutboxMessage {
  std::string topic;
  std::string key;  // the imageId
  std::string payload;
  Headers headers;
};

// An event for the tenant's webhook endpoints: one delivery is queued per enabled endpoint that
// subscribes to `type`, in the transaction that queues it (at most one per endpoint and event_id).
struct WebhookEvent {
  std::string tenant_id;
  std::string type;  // "image.uploaded", "processing.completed", "processing.failed", "image.deleted"
  std::string event_id;
  std::string payload;  // the event JSON, the body of every delivery
};

// A stored outbox row (for the relay).
struct OutboxRow {
  int64_t seq = 0;
  OutboxMessage message;
};

// Per-tenant limits; an absent value means "the configured default" (limits.* in the config).
struct TenantLimits {
  std::optional<int64_t> max_images;   // images stored at once
  std::optional<int64_t> max_bytes;    // bytes of original images stored at once
  std::optional<double> upload_rate;   // uploads per second (token bucket, burst = max(1, rate))
  std::optional<double> search_rate;   // searches per second
};

struct Tenant {
  std::string id;  // slug, e.g. "acme-corp"
  Timestamp created_at;
  TenantLimits limits;
  // Usage, kept by create_image / delete_image in their own transactions.
  int64_t image_count = 0;
  int64_t bytes_stored = 0;
};

// An API key's public record. The key itself is never stored: only its SHA-256 (hex).
struct ApiKey {
  std::string id;         // public id "key_<16 hex>": listed, and named to revoke the key
  std::string tenant_id;
  std::string name;       // the operator's label
  std::string prefix;     // the key's first characters ("dlk_1a2b3c4d"), to recognise it
  Timestamp created_at;
  std::optional<Timestamp> expires_at;
  std::optional<Timestamp> revoked_at;
  std::optional<Timestamp> last_used_at;  // updated at most about once a minute
  // Neither revoked nor expired at `now`.
  bool usable(Timestamp now) const { return !revoked_at && (!expires_at || now < *expires_at); }
};

// The limits create_image enforces inside its transaction; 0 = unlimited.
struct StorageQuota {
  int64_t max_images = 0;
  int64_t max_bytes = 0;
};


enum class ImageStatus { kUploaded, kProcessing, kCompleted, kFailed };
const char* image_status_name(ImageStatus s);
std::optional<ImageStatus> parse_image_status(std::string_view s);

// The image indexed before this one that it nearly duplicates (the near-duplicate check after
// indexing, pipeline/stages.h): its nearest neighbour in the tenant's collection of `model`,
// scoring at least the model's duplicate_threshold.
struct DuplicateOf {
  std::string image_id;
  double score = 0;
  std::string model;
  bool operator==(const DuplicateOf&) const = default;
};

struct ImageRecord {
  std::string image_id;
  std::string tenant_id;
  std::string file_name;     // sanitised display name; never used for paths
  std::string storage_path;  // blob key, e.g. tenant-acme/images/2025/11/28/img_x.jpg
  int64_t file_size = 0;
  std::string content_type;
  std::string sha256;  // hex
  int width = 0;
  int height = 0;
  std::string format;
  std::string color_profile;
  std::string uploaded_by;
  std::string processing_options_json;  // the processingOptions object as sent in the event
  std::vector<std::string> models;      // requested models
  ImageStatus status = ImageStatus::kUploaded;
  std::string idempotency_key;          // empty = none
  std::string thumbnail_path;           // blob key, empty = none
  std::string error_code;               // set when failed
  std::string error_message;
  std::string correlation_id;           // the ImageUploadedEvent's eventId
  Timestamp created_at;
  Timestamp updated_at;
  std::optional<Timestamp> searchable_after;
  std::optional<DuplicateOf> duplicate_of;
};

// Images in the pipeline (status uploaded or processing), by lane in kPriorities order; and the
// indexing steps (the last step of each model) completed recently: the observed rate.
struct ExtractionBacklog {
  std::array<int64_t, 3> waiting{};  // per lane
  std::array<int64_t, 3> ahead{};    // per lane, created before the image asked about
  int64_t recent_completions = 0;    // completed at or after `since`
  std::optional<Timestamp> first_completion;  // the oldest of those
};

enum class StepStatus { kPending, kRunning, kCompleted, kFailed };
const char* step_status_name(StepStatus s);

struct StepRecord {
  std::string image_id;
  std::string model;
  std::string step;  // "feature_extraction", "vector_indexing", "thumbnail"
  StepStatus status = StepStatus::kPending;
  int attempts = 0;
  std::optional<Timestamp> started_at;
  std::optional<Timestamp> completed_at;
  std::optional<int64_t> duration_ms;
  std::string last_error;
  std::string collection_name;
};

struct DeadLetter {
  int64_t id = 0;
  std::string topic;  // where the event should go when replayed
  std::string key;
  std::string payload;  // the full original event (or the raw undecodable bytes)
  std::string stage;
  std::string error_code;
  std::string error_message;
  std::string image_id;   // empty when undecodable
  std::string tenant_id;  // empty when undecodable
  int attempts = 0;
  Timestamp created_at;
  std::optional<Timestamp> replayed_at;
};

struct ScheduledRetry {
  int64_t id = 0;
  Timestamp due_at;
  OutboxMessage message;
};

// What the pipeline's steps are doing (the jobs page): steps running now, and completed since a
// time, per step name ("feature_extraction", "vector_indexing", "thumbnail").
struct StepActivity {
  std::string step;
  int64_t running = 0;
  int64_t completed = 0;
};

struct ImagePage {
  std::vector<ImageRecord> images;
  std::string next_cursor;  // empty at the end
};

// Result of create_image: the image that now exists for this upload.
struct CreateImageOutcome {
  ImageRecord image;
  enum class Kind { kCreated, kIdempotentReplay, kDuplicate } kind = Kind::kCreated;
};

// kResourceExhausted (reason quota_images / quota_bytes, with the limit) when storing image on top
// of a tenant's usage would cross the quota. Shared by the store implementations.
Status check_quota(const ImageRecord& image, const StorageQuota& quota, int64_t image_count, int64_t bytes_stored);

// A token bucket's state: take() refills at `rate` tokens/s up to `burst`, then takes one token.
// Returns 0 when a token was taken, else the seconds until one will be. Not thread-safe.
struct RateBucket {
  double tokens = 0;
  int64_t updated_ms = 0;
  double take(double rate, double burst, int64_t now_ms);
};

// Operations available inside one transaction. Valid only during the transact() callback.
class MetadataTx {
 public:
  virtual ~MetadataTx() = default;
  // Idempotency: true when (group, event_id) was already marked in an earlier transaction.
  virtual Result<bool> is_processed(const std::string& group, const std::string& event_id) = 0;
  virtual Status mark_processed(const std::string& group, const std::string& event_id) = 0;

  virtual Result<ImageRecord> get_image(const std::string& image_id) = 0;
  virtual Status set_image_status(const std::string& image_id, ImageStatus status,
                                  const std::string& error_code = {},
                                  const std::string& error_message = {}) = 0;
  virtual Status set_thumbnail(const std::string& image_id, const std::string& path) = 0;
  virtual Status set_duplicate_of(const std::string& image_id, const DuplicateOf& duplicate) = 0;
  // Sets searchable_after and status completed and records the completion event id — only the
  // first time; returns false if the image was already claimed (so exactly one completion event).
  virtual Result<bool> claim_completion(const std::string& image_id, Timestamp searchable_after) = 0;

  virtual Result<std::vector<StepRecord>> get_steps(const std::string& image_id) = 0;
  virtual Status upsert_step(const StepRecord& step) = 0;

  virtual Status enqueue(const OutboxMessage& message) = 0;
  virtual Status add_dead_letter(const DeadLetter& letter) = 0;
  virtual Status schedule_retry(Timestamp due_at, const OutboxMessage& message) = 0;
  virtual Status queue_webhook(const WebhookEvent& event) = 0;
};

class MetadataStore {
 public:
  virtual ~MetadataStore() = default;

  // Runs fn inside one serialisable transaction; commits when fn returns OK, rolls back otherwise.
  // fn may be run again if the store asks for a retry (serialisation failure), so it must have no
  // effects outside the transaction.
  virtual Status transact(const std::function<Status(MetadataTx&)>& fn) = 0;

  // --- tenants and API keys (keys are stored as SHA-256 hex, never in clear)
  // kAlreadyExists if present (atomic: of two concurrent creators exactly one succeeds).
  virtual Status create_tenant(const Tenant& tenant) = 0;
  virtual Result<Tenant> get_tenant(const std::string& id) = 0;  // with limits and usage
  virtual Result<std::vector<Tenant>> list_tenants() = 0;
  // Replaces the tenant's limits (absent = the default); kNotFound for an unknown tenant.
  virtual Status set_tenant_limits(const std::string& id, const TenantLimits& limits) = 0;
  // Adds a key (key.id, tenant_id, name, prefix, created_at, expires_at are stored). Adding a hash
  // that is already stored changes nothing (a configured key is re-added at every start).
  virtual Status add_api_key(const ApiKey& key, const std::string& key_sha256) = 0;
  // The key stored under this hash, revoked and expired ones included; kNotFound if none.
  virtual Result<ApiKey> find_api_key(const std::string& key_sha256) = 0;
  virtual Result<std::vector<ApiKey>> list_api_keys(const std::string& tenant_id) = 0;  // by created_at
  // Marks the key revoked (idempotent: the first time is kept); kNotFound if the tenant has no such key.
  virtual Status revoke_api_key(const std::string& tenant_id, const std::string& key_id, Timestamp at) = 0;
  virtual Status touch_api_key(const std::string& key_id, Timestamp at) = 0;  // last_used_at

  // --- rate limits
  // Takes one token from the named bucket (rate tokens/s, at most burst stored; a new bucket starts
  // full). Returns 0 when a token was taken, else the seconds until one will be available. Shared by
  // every process using this store where the backend is shared by processes (PostgreSQL); the
  // SQLite store keeps buckets in memory (one HTTP process per SQLite file).
  virtual Result<double> take_rate_token(const std::string& bucket, double rate, double burst, Timestamp now) = 0;

  // --- images
  // One transaction: returns the existing image for a repeated idempotency key or (unless
  // skip_duplicate_check) an identical file (same sha256) in the tenant; else checks the quota,
  // inserts the image, adds it to the tenant's usage and enqueues its ImageUploadedEvent (built by
  // make_event for the final image id) with its "image.uploaded" webhook deliveries (eventId = the
  // image's correlation_id). Over quota: kResourceExhausted with context reason
  // "quota_images" or "quota_bytes" and "limit", and nothing is written.
  virtual Result<CreateImageOutcome> create_image(
      const ImageRecord& image, bool skip_duplicate_check,
      const std::function<OutboxMessage(const ImageRecord&)>& make_event, const StorageQuota& quota = {}) = 0;
  virtual Result<ImageRecord> get_image(const std::string& tenant_id, const std::string& image_id) = 0;
  // The tenant's records among image_ids, in one read (search enriches its hits with it): absent
  // ids and other tenants' images are left out; order unspecified.
  virtual Result<std::vector<ImageRecord>> get_images(const std::string& tenant_id,
                                                      const std::vector<std::string>& image_ids) = 0;
  virtual Result<std::vector<StepRecord>> get_steps(const std::string& image_id) = 0;
  // Newest first. duplicates_only: the images with a duplicate_of.
  virtual Result<ImagePage> list_images(const std::string& tenant_id, std::optional<ImageStatus> status,
                                        int limit, const std::string& cursor, bool duplicates_only = false) = 0;
  // Which of these image ids have a row (any tenant); for sweeping orphans.
  virtual Result<std::vector<std::string>> existing_images(const std::vector<std::string>& image_ids) = 0;
  // Deletes the image's rows (steps included) and takes it off the tenant's usage, and queues the
  // `deleted` webhook event if given, in one transaction; kNotFound if absent.
  virtual Status delete_image(const std::string& tenant_id, const std::string& image_id,
                              const WebhookEvent* deleted = nullptr) = 0;
  virtual Result<std::vector<std::pair<std::string, int64_t>>> count_by_status() = 0;
  // Mean duration of the last `window` completed steps of this kind (ms), for time estimates.
  virtual Result<std::optional<double>> recent_step_duration_ms(const std::string& step, int window) = 0;
  // Every step name with running steps or steps completed at or after `since`.
  virtual Result<std::vector<StepActivity>> step_activity(Timestamp since) = 0;
  // The pipeline's queue around `image`, across tenants (the lanes are shared), for the time
  // estimates (pipeline/eta.h).
  virtual Result<ExtractionBacklog> extraction_backlog(const ImageRecord& image, Timestamp since) = 0;

  // --- outbox (relay)
  // Up to limit unsent rows in outbox order, claimed by relay_id until now + lease: rows nobody
  // holds, rows whose lease ran out, and rows this relay already holds (their lease is renewed, so a
  // relay that failed part of a batch starts again from its first unsent row). It stops at the
  // first row another relay holds under a live lease, so relays never publish past each other:
  // outbox order, and with it per-key order, holds across relays. The lease must outlast one
  // publish (Kafka: message timeout + flush) or a slow batch would be taken over and published twice.
  virtual Result<std::vector<OutboxRow>> pending_outbox(const std::string& relay_id, int limit,
                                                        std::chrono::milliseconds lease) = 0;
  virtual Status mark_outbox_sent(const std::vector<int64_t>& seqs) = 0;
  virtual Result<int64_t> outbox_backlog() = 0;

  // --- retries and dead letters
  // Moves due retries into the outbox (one transaction) and returns how many moved.
  virtual Result<int> release_due_retries(Timestamp now, int limit) = 0;
  virtual Result<std::optional<Timestamp>> next_retry_due() = 0;
  // Oldest first. tenant_id empty: every tenant's (and the undecodable ones, which have none).
  virtual Result<std::vector<DeadLetter>> list_dead_letters(bool include_replayed, int limit,
                                                            const std::string& tenant_id = "") = 0;
  // Retries waiting for their time, soonest first (the message is the event to re-send).
  virtual Result<std::vector<ScheduledRetry>> list_scheduled_retries(int limit) = 0;
  virtual Result<DeadLetter> get_dead_letter(int64_t id) = 0;
  // One transaction: marks the letter replayed, sets its image back to processing (unless it
  // completed meanwhile) and enqueues message.
  virtual Status replay_dead_letter(int64_t id, const OutboxMessage& message) = 0;

  // Removes processed-event markers older than `before` (they only guard against redelivery).
  virtual Status trim_processed(Timestamp before) = 0;
  // Webhook endpoints and deliveries, on the same database.
  virtual WebhookStore& webhooks() = 0;

  // Backends reachable (readiness).
  virtual Status ping() = 0;
};

}  // namespace deeplens
