// MetadataStore on SQLite (the embedded default). Shares its SqliteDatabase with the sqlite_log
// bus; when `append_to_log` is set, MetadataTx::enqueue writes the event straight into the event
// log inside the same transaction (the outbox row *is* the log entry, no relay hop); otherwise it
// writes to the outbox table for the relay (Kafka).
//
// Thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "store/metadata_store.h"
#include "store/sqlite/sqlite_database.h"

namespace deeplens {

// Appends one message to the event log on the given (writer, in-transaction) connection.
using LogAppender = std::function<Status(SqliteConnection&, const OutboxMessage&)>;

// Queues `event`'s webhook deliveries on the given (writer, in-transaction) connection.
// Queues `event`'s webhook deliveries on the given (writer, in-transaction) connection; when rows
// were queued, `listener` fires after the commit.
Status sqlite_queue_webhook(SqliteConnection& c, const WebhookEvent& event, Timestamp now,
                            const std::shared_ptr<DeliveryListener>& listener);

class SqliteMetadataStore final : public MetadataStore, public WebhookStore {
 public:
  // db must outlive the store. Applies the store's migrations.
  static Result<std::unique_ptr<SqliteMetadataStore>> open(SqliteDatabase& db, const Clock& clock,
                                                           LogAppender append_to_log = nullptr);

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
  // In memory: one process serves HTTP on a SQLite file (the vector store's lock sees to that).
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

  // WebhookStore (sqlite_webhooks.cc)
  void on_deliveries_queued(std::function<void()> listener) override { queued_->set(std::move(listener)); }
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
  SqliteMetadataStore(SqliteDatabase& db, const Clock& clock, LogAppender append)
      : db_(db), clock_(clock), append_(std::move(append)) {}
  SqliteDatabase& db_;
  const Clock& clock_;
  LogAppender append_;
  std::shared_ptr<DeliveryListener> queued_ = std::make_shared<DeliveryListener>();
  std::mutex buckets_mu_;
  std::unordered_map<std::string, RateBucket> buckets_;  // guarded by buckets_mu_
};

}  // namespace deeplens
