// WebhookStore: per-tenant webhook endpoints and the durable queue of their deliveries, with each
// delivery's attempt log. Deliveries are created by the transactions that cause them
// (MetadataTx::queue_webhook, create_image, delete_image: one row per subscribed, enabled endpoint
// of the tenant, in the same transaction as the state change), so a crash never loses one; the
// dispatcher claims due deliveries under a lease (several processes never send the same delivery
// at once; a crashed sender's lease runs out and the delivery is sent again, with the same id).
//
// Secrets are stored as given: the caller seals them (webhooks/secret_box.h) before they get here.
// Implemented by both metadata stores on the same database (see MetadataStore::webhooks()).
// Thread-safe: all methods may be called from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/result.h"

namespace deeplens {

struct WebhookEndpoint {
  std::string id;  // "wh_" + 24 hex
  std::string tenant_id;
  std::string url;
  std::vector<std::string> events;  // event types it receives ("processing.completed", ...)
  std::string description;
  bool enabled = true;
  std::string disabled_reason;  // why DeepLens disabled it (410 Gone, failing too long); empty otherwise
  std::string secret;           // sealed
  std::string previous_secret;  // sealed; still signs until previous_secret_until (a rotation's overlap)
  std::optional<Timestamp> previous_secret_until;
  std::optional<Timestamp> failing_since;  // first failed attempt since its last success
  Timestamp created_at;
  Timestamp updated_at;
};

enum class DeliveryStatus { kPending, kSucceeded, kFailed };
const char* delivery_status_name(DeliveryStatus s);
std::optional<DeliveryStatus> parse_delivery_status(std::string_view s);

struct DeliveryAttempt {
  Timestamp at;
  int http_status = 0;  // 0: no HTTP answer (refused, timeout, ...)
  int64_t duration_ms = 0;
  std::string error;  // empty on success
};

struct WebhookDelivery {
  std::string id;  // "msg_" + 32 hex: the webhook-id header, the same on every attempt
  std::string endpoint_id;
  std::string tenant_id;
  std::string event_type;
  std::string event_id;
  std::string payload;  // the body sent
  DeliveryStatus status = DeliveryStatus::kPending;
  int attempt_count = 0;
  std::vector<DeliveryAttempt> attempts;  // oldest first (the last kKeptAttempts)
  std::optional<Timestamp> next_attempt_at;  // when pending
  Timestamp created_at;
  Timestamp updated_at;
};
inline constexpr size_t kKeptAttempts = 20;

struct DeliveryPage {
  std::vector<WebhookDelivery> deliveries;
  std::string next_cursor;  // empty at the end
};

// A delivery claimed for sending, with what the sender needs of its endpoint.
struct ClaimedDelivery {
  WebhookDelivery delivery;
  WebhookEndpoint endpoint;
};

// What one attempt came to, recorded by the dispatcher.
struct AttemptOutcome {
  DeliveryAttempt attempt;
  DeliveryStatus status = DeliveryStatus::kPending;  // succeeded; pending = retry at next_attempt_at; failed = given up
  std::optional<Timestamp> next_attempt_at;
  std::string disable_endpoint;  // non-empty: disable the endpoint, with this reason
};

// Who to tell, after a commit, that this process queued deliveries (the dispatcher's wake-up).
// Thread-safe.
class DeliveryListener {
 public:
  void set(std::function<void()> fn) {
    std::lock_guard lock(mu_);
    fn_ = std::move(fn);
  }
  void fire() {
    std::function<void()> fn;
    {
      std::lock_guard lock(mu_);
      fn = fn_;
    }
    if (fn) fn();
  }

 private:
  std::mutex mu_;
  std::function<void()> fn_;
};

class WebhookStore {
 public:
  virtual ~WebhookStore() = default;

  // Called from the committing thread after each commit of this process that queued deliveries
  // (other processes' commits are found by polling). Replaces an earlier listener; nullptr: none.
  virtual void on_deliveries_queued(std::function<void()> listener) = 0;

  // Inserts the endpoint unless the tenant already has max_per_tenant (kResourceExhausted, reason
  // "webhook_limit"); the count and the insert are one step.
  virtual Status create_webhook(const WebhookEndpoint& endpoint, int max_per_tenant) = 0;
  virtual Result<std::vector<WebhookEndpoint>> list_webhooks(const std::string& tenant_id) = 0;  // by created_at
  virtual Result<WebhookEndpoint> get_webhook(const std::string& tenant_id, const std::string& id) = 0;
  // Replaces url, events, description, enabled, disabled_reason, secrets, failing_since, updated_at.
  virtual Status update_webhook(const WebhookEndpoint& endpoint) = 0;
  // Deletes the endpoint and its deliveries; kNotFound if the tenant has no such endpoint.
  virtual Status delete_webhook(const std::string& tenant_id, const std::string& id) = 0;

  // A delivery made outside a pipeline transaction (the test event).
  virtual Status add_delivery(const WebhookDelivery& delivery) = 0;
  // Up to limit pending deliveries due at `now` of enabled endpoints, nobody's lease live, at most
  // per_endpoint under a live lease per endpoint (counting other senders' claims); each is leased
  // to owner until now + lease.
  virtual Result<std::vector<ClaimedDelivery>> claim_deliveries(const std::string& owner, Timestamp now,
                                                                std::chrono::milliseconds lease, int limit,
                                                                int per_endpoint) = 0;
  // Appends the attempt, sets status / next attempt, releases the lease; on the endpoint: clears
  // failing_since on success, sets it (if unset) on failure, disables it when asked. One transaction.
  virtual Status record_attempt(const std::string& delivery_id, const AttemptOutcome& outcome) = 0;
  // Newest first; status filters; cursor from the previous page.
  virtual Result<DeliveryPage> list_deliveries(const std::string& tenant_id, const std::string& endpoint_id,
                                               std::optional<DeliveryStatus> status, int limit,
                                               const std::string& cursor) = 0;
  virtual Result<WebhookDelivery> get_delivery(const std::string& tenant_id, const std::string& endpoint_id,
                                               const std::string& delivery_id) = 0;
  // Puts the delivery back to pending, due at `now` (same id: receivers deduplicate on it).
  virtual Status redeliver(const std::string& tenant_id, const std::string& endpoint_id,
                           const std::string& delivery_id, Timestamp now) = 0;
  // Pending deliveries per endpoint id (metrics).
  virtual Result<std::vector<std::pair<std::string, int64_t>>> pending_deliveries() = 0;
  // When the earliest pending delivery of an enabled endpoint is due (none: nullopt).
  virtual Result<std::optional<Timestamp>> next_delivery_due() = 0;
  // Removes succeeded and failed deliveries last updated before `before` (the log's retention);
  // pending ones stay whatever their age. Returns how many were removed.
  virtual Result<int64_t> trim_deliveries(Timestamp before) = 0;
};

// The column text of an endpoint's events: " a b c " (a space on each side of every type), so one
// substring test (" type ") matches a type in SQL on both dialects.
std::string webhook_events_column(const std::vector<std::string>& events);
std::vector<std::string> webhook_events_from_column(const std::string& text);
// Attempts as stored: a JSON array of {at, httpStatus, durationMs, error}.
std::string delivery_attempts_to_json(const std::vector<DeliveryAttempt>& attempts);
std::vector<DeliveryAttempt> delivery_attempts_from_json(const std::string& text);
// Cursor of a delivery listing: "<created_at ms>:<id>".
std::string delivery_cursor(const WebhookDelivery& d);
Result<std::pair<int64_t, std::string>> parse_delivery_cursor(const std::string& cursor);

}  // namespace deeplens
