// MetadataStore: the system of record — tenants and API keys, images and their processing steps,
// the outbox of events to publish, dead letters, scheduled retries and the ids of events already
// processed (idempotency). Every pipeline effect on metadata happens inside transact(), together
// with the events it causes (transactional outbox), so a crash never leaves a state change without
// its event or an event without its state change.
//
// Implementations: sqlite/ (embedded default, WAL) and postgres/ (at scale).
// Thread-safety: all methods may be called from any thread; transactions are serialisable.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/result.h"

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

// A stored outbox row (for the relay).
struct OutboxRow {
  int64_t seq = 0;
  OutboxMessage message;
};

struct Tenant {
  std::string id;  // slug, e.g. "acme-corp"
  Timestamp created_at;
};

enum class ImageStatus { kUploaded, kProcessing, kCompleted, kFailed };
const char* image_status_name(ImageStatus s);
std::optional<ImageStatus> parse_image_status(std::string_view s);

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

struct ImagePage {
  std::vector<ImageRecord> images;
  std::string next_cursor;  // empty at the end
};

// Result of create_image: the image that now exists for this upload.
struct CreateImageOutcome {
  ImageRecord image;
  enum class Kind { kCreated, kIdempotentReplay, kDuplicate } kind = Kind::kCreated;
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
  // Sets searchable_after and status completed and records the completion event id — only the
  // first time; returns false if the image was already claimed (so exactly one completion event).
  virtual Result<bool> claim_completion(const std::string& image_id, Timestamp searchable_after) = 0;

  virtual Result<std::vector<StepRecord>> get_steps(const std::string& image_id) = 0;
  virtual Status upsert_step(const StepRecord& step) = 0;

  virtual Status enqueue(const OutboxMessage& message) = 0;
  virtual Status add_dead_letter(const DeadLetter& letter) = 0;
  virtual Status schedule_retry(Timestamp due_at, const OutboxMessage& message) = 0;
};

class MetadataStore {
 public:
  virtual ~MetadataStore() = default;

  // Runs fn inside one serialisable transaction; commits when fn returns OK, rolls back otherwise.
  // fn may be run again if the store asks for a retry (serialisation failure), so it must have no
  // effects outside the transaction.
  virtual Status transact(const std::function<Status(MetadataTx&)>& fn) = 0;

  // --- tenants and API keys (keys are stored as SHA-256 hex, never in clear)
  virtual Status create_tenant(const Tenant& tenant) = 0;  // kAlreadyExists if present
  virtual Result<Tenant> get_tenant(const std::string& id) = 0;
  virtual Result<std::vector<Tenant>> list_tenants() = 0;
  virtual Status add_api_key(const std::string& tenant_id, const std::string& key_sha256) = 0;
  virtual Result<std::string> tenant_for_key(const std::string& key_sha256) = 0;  // kNotFound

  // --- images
  // One transaction: returns the existing image for a repeated idempotency key or (unless
  // skip_duplicate_check) an identical file (same sha256) in the tenant; else inserts the image
  // and enqueues its ImageUploadedEvent (built by make_event for the final image id).
  virtual Result<CreateImageOutcome> create_image(
      const ImageRecord& image, bool skip_duplicate_check,
      const std::function<OutboxMessage(const ImageRecord&)>& make_event) = 0;
  virtual Result<ImageRecord> get_image(const std::string& tenant_id, const std::string& image_id) = 0;
  virtual Result<std::vector<StepRecord>> get_steps(const std::string& image_id) = 0;
  virtual Result<ImagePage> list_images(const std::string& tenant_id, std::optional<ImageStatus> status,
                                        int limit, const std::string& cursor) = 0;
  // Deletes the image's rows (steps included); kNotFound if absent.
  virtual Status delete_image(const std::string& tenant_id, const std::string& image_id) = 0;
  virtual Result<std::vector<std::pair<std::string, int64_t>>> count_by_status() = 0;
  // Mean duration of the last `window` completed steps of this kind (ms), for time estimates.
  virtual Result<std::optional<double>> recent_step_duration_ms(const std::string& step, int window) = 0;

  // --- outbox (relay)
  // Up to limit unsent rows in order, claimed for this caller for a lease (5 s) so that several
  // relays sharing the outbox do not publish the same rows; unclaimed again when the lease ends.
  virtual Result<std::vector<OutboxRow>> pending_outbox(int limit) = 0;
  virtual Status mark_outbox_sent(const std::vector<int64_t>& seqs) = 0;
  virtual Result<int64_t> outbox_backlog() = 0;

  // --- retries and dead letters
  // Moves due retries into the outbox (one transaction) and returns how many moved.
  virtual Result<int> release_due_retries(Timestamp now, int limit) = 0;
  virtual Result<std::optional<Timestamp>> next_retry_due() = 0;
  virtual Result<std::vector<DeadLetter>> list_dead_letters(bool include_replayed, int limit) = 0;
  virtual Result<DeadLetter> get_dead_letter(int64_t id) = 0;
  // One transaction: marks the letter replayed, sets its image back to processing (unless it
  // completed meanwhile) and enqueues message.
  virtual Status replay_dead_letter(int64_t id, const OutboxMessage& message) = 0;

  // Removes processed-event markers older than `before` (they only guard against redelivery).
  virtual Status trim_processed(Timestamp before) = 0;
  // Backends reachable (readiness).
  virtual Status ping() = 0;
};

}  // namespace deeplens
