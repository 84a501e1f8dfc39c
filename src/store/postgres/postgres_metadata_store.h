// MetadataStore on PostgreSQL (at scale): the same tables and semantics as the SQLite store, on a
// server shared by every api/worker process. libpqxx stays inside the .cc (pimpl), so including
// this header costs nothing.
//
// Connections: a small pool, opened lazily up to PostgresOptions::pool_size. A connection that
// turns out broken is dropped (with the idle ones, which are stale after a server restart) and a
// fresh one is opened on the next call, so the store recovers by itself when the server comes back.
// While the server is unreachable every call answers kUnavailable ("PostgreSQL is unavailable: ...")
// and the API turns that into 503.
//
// Transactions run at READ COMMITTED with explicit locks instead of SERIALIZABLE, so concurrent
// workers wait rather than fail:
//   - every MetadataTx call that touches an image first locks its row (SELECT ... FOR UPDATE, once
//     per image per transaction), so a read-modify-write of an image's steps or status inside
//     transact() never loses a concurrent update;
//   - is_processed() takes a transaction-scoped advisory lock on (group, eventId), so two workers
//     handling the same redelivered event run one after the other and the second sees the marker;
//   - create_image() takes advisory locks on (tenant, idempotency key) and (tenant, sha256), so
//     concurrent identical uploads yield one image, as on SQLite, and then locks the tenant's row
//     (FOR UPDATE) so the quota check and the usage increment are one step for concurrent uploads;
//   - take_rate_token() locks the bucket's row, so processes sharing the database share the bucket;
//   - release_due_retries() claims rows with FOR UPDATE SKIP LOCKED (several retry stages may run).
// transact() re-runs its callback on serialization failure or deadlock (up to max_attempts) and once
// more on a fresh connection when a pooled connection was found broken before commit; a callback must
// therefore have no effects outside the transaction (as the MetadataStore contract says). If the
// connection breaks during COMMIT the outcome is unknown and the call answers kUnavailable without
// retrying.
//
// Schema: versioned migrations recorded in `schema_migrations (component, version, applied_at)`,
// applied at open() under an advisory lock (several processes may start at once). Timestamps are
// BIGINT milliseconds since the Unix epoch (UTC), exactly like the SQLite store, so the two schemas
// compare column for column. Payloads (outbox, scheduled retries, dead letters) and dead-letter
// keys are BYTEA: the bus carries bytes, and a poison message need not be valid UTF-8. Identifier
// columns use COLLATE "C" so ordering (listing cursors) is bytewise, as on SQLite.
//
// Thread-safe: all methods may be called from any thread. A transact() callback must not call back
// into the store (it would need a second pooled connection while holding row locks).
#pragma once

#include <memory>
#include <string>

#include "store/metadata_store.h"

namespace deeplens {

struct PostgresOptions {
  // Most connections open at once; callers beyond that wait up to acquire_timeout_ms.
  int pool_size = 8;
  // libpq connect_timeout for each new connection (seconds). Ignored if the URL sets its own.
  int connect_timeout_s = 5;
  // How long a call waits for a free pooled connection before answering kUnavailable.
  int acquire_timeout_ms = 10000;
  // Server-side statement_timeout per statement (0 = none); a timed-out statement is kTimeout.
  int statement_timeout_ms = 30000;
  // Runs of a transaction that hit serialization failures or deadlocks before giving up
  // (kUnavailable).
  int max_attempts = 10;
};

class PostgresMetadataStore final : public MetadataStore, public WebhookStore {
 public:
  // url: a libpq connection URI ("postgresql://user:pw@host:5432/db?sslmode=disable") or keyword
  // string ("host=... dbname=..."). Connects once and applies migrations; kUnavailable when the
  // server cannot be reached. The clock must outlive the store.
  static Result<std::unique_ptr<PostgresMetadataStore>> open(const std::string& url, const Clock& clock,
                                                             PostgresOptions options = {});
  // The schema version applied on the server and the one this build expects, without changing
  // anything (for `deeplens doctor`); applied is 0 when no migration ever ran. kUnavailable when
  // the server cannot be reached.
  struct SchemaState {
    int64_t applied = 0;
    int64_t latest = 0;
  };
  static Result<SchemaState> schema_state(const std::string& url);

  ~PostgresMetadataStore() override;
  PostgresMetadataStore(const PostgresMetadataStore&) = delete;
  PostgresMetadataStore& operator=(const PostgresMetadataStore&) = delete;

  Status transact(const std::function<Status(MetadataTx&)>& fn) override;
  Status create_tenant(const Tenant& tenant) override;
  Result<Tenant> get_tenant(const std::string& id) override;
  Result<std::vector<Tenant>> list_tenants() override;
  Status set_tenant_limits(const std::string& id, const TenantLimits& limits) override;
  Status add_api_key(const ApiKey& key, const std::string& key_sha256) override;
  Result<ApiKey> find_api_key(const std::string& key_sha256) override;
  Result<std::vector<ApiKey>> list_api_keys(const std::string& tenant_id) override;
  Status revoke_api_key(const std::string& tenant_id, const std::string& key_id, Timestamp at) override;
  Status touch_api_key(const std::string& key_id, Timestamp at) override;
  // In the rate_buckets table, one row per bucket locked for the update: every process sharing
  // the database draws from the same bucket.
  Result<double> take_rate_token(const std::string& bucket, double rate, double burst, Timestamp now) override;
  Result<CreateImageOutcome> create_image(
      const ImageRecord& image, bool skip_duplicate_check,
      const std::function<OutboxMessage(const ImageRecord&)>& make_event, const StorageQuota& quota) override;
  Result<ImageRecord> get_image(const std::string& tenant_id, const std::string& image_id) override;
  Result<std::vector<ImageRecord>> get_images(const std::string& tenant_id,
                                              const std::vector<std::string>& image_ids) override;
  Result<std::vector<StepRecord>> get_steps(const std::string& image_id) override;
  Result<ImagePage> list_images(const std::string& tenant_id, std::optional<ImageStatus> status,
                                int limit, const std::string& cursor, bool duplicates_only = false) override;
  Result<std::vector<std::string>> existing_images(const std::vector<std::string>& image_ids) override;
  Status delete_image(const std::string& tenant_id, const std::string& image_id,
                      const WebhookEvent* deleted = nullptr) override;
  Result<std::vector<std::pair<std::string, int64_t>>> count_by_status() override;
  Result<std::optional<double>> recent_step_duration_ms(const std::string& step, int window) override;
  Result<std::vector<StepActivity>> step_activity(Timestamp since) override;
  Result<ExtractionBacklog> extraction_backlog(const ImageRecord& image, Timestamp since) override;
  Result<std::vector<OutboxRow>> pending_outbox(const std::string& relay_id, int limit,
                                                std::chrono::milliseconds lease) override;
  Status mark_outbox_sent(const std::vector<int64_t>& seqs) override;
  Result<int64_t> outbox_backlog() override;
  Result<int> release_due_retries(Timestamp now, int limit) override;
  Result<std::optional<Timestamp>> next_retry_due() override;
  Result<std::vector<DeadLetter>> list_dead_letters(bool include_replayed, int limit,
                                                    const std::string& tenant_id) override;
  Result<std::vector<ScheduledRetry>> list_scheduled_retries(int limit) override;
  Result<DeadLetter> get_dead_letter(int64_t id) override;
  Status replay_dead_letter(int64_t id, const OutboxMessage& message) override;
  Status trim_processed(Timestamp before) override;
  Status ping() override;
  WebhookStore& webhooks() override { return *this; }

  // WebhookStore. claim_deliveries locks its candidates FOR UPDATE SKIP LOCKED, so processes
  // claiming at once take different deliveries.
  void on_deliveries_queued(std::function<void()> listener) override;
  Status create_webhook(const WebhookEndpoint& endpoint, int max_per_tenant) override;
  Result<std::vector<WebhookEndpoint>> list_webhooks(const std::string& tenant_id) override;
  Result<WebhookEndpoint> get_webhook(const std::string& tenant_id, const std::string& id) override;
  Status update_webhook(const WebhookEndpoint& endpoint) override;
  Status delete_webhook(const std::string& tenant_id, const std::string& id) override;
  Status add_delivery(const WebhookDelivery& delivery) override;
  Result<std::vector<ClaimedDelivery>> claim_deliveries(const std::string& owner, Timestamp now,
                                                        std::chrono::milliseconds lease, int limit,
                                                        int per_endpoint) override;
  Status record_attempt(const std::string& delivery_id, const AttemptOutcome& outcome) override;
  Result<DeliveryPage> list_deliveries(const std::string& tenant_id, const std::string& endpoint_id,
                                       std::optional<DeliveryStatus> status, int limit,
                                       const std::string& cursor) override;
  Result<WebhookDelivery> get_delivery(const std::string& tenant_id, const std::string& endpoint_id,
                                       const std::string& delivery_id) override;
  Status redeliver(const std::string& tenant_id, const std::string& endpoint_id, const std::string& delivery_id,
                   Timestamp now) override;
  Result<std::vector<std::pair<std::string, int64_t>>> pending_deliveries() override;
  Result<std::optional<Timestamp>> next_delivery_due() override;
  Result<int64_t> trim_deliveries(Timestamp before) override;

 private:
  struct Impl;
  explicit PostgresMetadataStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace deeplens
