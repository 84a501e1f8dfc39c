#include "store/sqlite/sqlite_metadata_store.h"

#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "events/priority.h"

namespace deeplens {
namespace {

int64_t to_ms(Timestamp t) { return t.time_since_epoch().count(); }

Timestamp from_ms(int64_t ms) { return Timestamp(std::chrono::milliseconds(ms)); }

std::string join_models(const std::vector<std::string>& models) {
  return nlohmann::json(models).dump();
}

std::vector<std::string> split_models(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  std::vector<std::string> out;
  if (j.is_array())
    for (const auto& m : j)
      if (m.is_string()) out.push_back(m.get<std::string>());
  return out;
}

const std::vector<SqliteMigration>& migrations() {
  static const std::vector<SqliteMigration> kMigrations = {
      {1, R"sql(
CREATE TABLE tenants (
  id TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL
);
CREATE TABLE api_keys (
  key_sha256 TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  created_at INTEGER NOT NULL
);
CREATE TABLE images (
  image_id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  file_name TEXT NOT NULL,
  storage_path TEXT NOT NULL,
  file_size INTEGER NOT NULL,
  content_type TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  format TEXT NOT NULL,
  color_profile TEXT NOT NULL,
  uploaded_by TEXT NOT NULL,
  processing_options TEXT NOT NULL,
  models TEXT NOT NULL,
  status TEXT NOT NULL,
  idempotency_key TEXT,
  thumbnail_path TEXT,
  error_code TEXT,
  error_message TEXT,
  correlation_id TEXT NOT NULL,
  completion_claimed INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  searchable_after INTEGER
);
CREATE UNIQUE INDEX images_idempotency ON images(tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX images_sha256 ON images(tenant_id, sha256);
CREATE INDEX images_listing ON images(tenant_id, created_at DESC, image_id DESC);
CREATE TABLE steps (
  image_id TEXT NOT NULL,
  model TEXT NOT NULL,
  step TEXT NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  started_at INTEGER,
  completed_at INTEGER,
  duration_ms INTEGER,
  last_error TEXT,
  collection_name TEXT,
  PRIMARY KEY (image_id, model, step)
) WITHOUT ROWID;
CREATE INDEX steps_recent ON steps(step, completed_at) WHERE status = 'completed';
CREATE TABLE outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  topic TEXT NOT NULL,
  key TEXT NOT NULL,
  headers TEXT NOT NULL,
  payload TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  sent_at INTEGER
);
CREATE INDEX outbox_pending ON outbox(seq) WHERE sent_at IS NULL;
CREATE TABLE scheduled_retries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  due_at INTEGER NOT NULL,
  topic TEXT NOT NULL,
  key TEXT NOT NULL,
  headers TEXT NOT NULL,
  payload TEXT NOT NULL
);
CREATE INDEX scheduled_retries_due ON scheduled_retries(due_at);
CREATE TABLE dead_letters (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  topic TEXT NOT NULL,
  key TEXT NOT NULL,
  payload TEXT NOT NULL,
  stage TEXT NOT NULL,
  error_code TEXT NOT NULL,
  error_message TEXT NOT NULL,
  image_id TEXT,
  tenant_id TEXT,
  attempts INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  replayed_at INTEGER
);
CREATE TABLE processed_events (
  consumer_group TEXT NOT NULL,
  event_id TEXT NOT NULL,
  processed_at INTEGER NOT NULL,
  PRIMARY KEY (consumer_group, event_id)
) WITHOUT ROWID;
CREATE INDEX processed_events_age ON processed_events(processed_at);
)sql"},
      // Several relays (api and worker processes) share one outbox: each claims rows for a lease.
      {2, "ALTER TABLE outbox ADD COLUMN claimed_until INTEGER;"},
      // Per-tenant limits and usage; API keys with ids, names, expiry and revocation.
      {3, R"sql(
ALTER TABLE tenants ADD COLUMN max_images INTEGER;
ALTER TABLE tenants ADD COLUMN max_bytes INTEGER;
ALTER TABLE tenants ADD COLUMN upload_rate REAL;
ALTER TABLE tenants ADD COLUMN search_rate REAL;
ALTER TABLE tenants ADD COLUMN image_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN bytes_stored INTEGER NOT NULL DEFAULT 0;
UPDATE tenants SET
  image_count = (SELECT COUNT(*) FROM images WHERE images.tenant_id = tenants.id),
  bytes_stored = (SELECT COALESCE(SUM(file_size), 0) FROM images WHERE images.tenant_id = tenants.id);
ALTER TABLE api_keys ADD COLUMN id TEXT;
ALTER TABLE api_keys ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN prefix TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN revoked_at INTEGER;
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
UPDATE api_keys SET id = 'key_' || substr(key_sha256, 1, 16) WHERE id IS NULL;
CREATE UNIQUE INDEX api_keys_id ON api_keys(id);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id, created_at);
)sql"},
      // Which relay holds a claimed row: a relay renews its own claims and never passes another's.
      {4, "ALTER TABLE outbox ADD COLUMN claimed_by TEXT;"},
      // Webhook endpoints and their deliveries (queued by the transactions that cause them).
      {5, R"sql(
CREATE TABLE webhook_endpoints (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  url TEXT NOT NULL,
  events TEXT NOT NULL,
  description TEXT NOT NULL,
  enabled INTEGER NOT NULL,
  disabled_reason TEXT,
  secret TEXT NOT NULL,
  previous_secret TEXT,
  previous_secret_until INTEGER,
  failing_since INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints(tenant_id, created_at);
CREATE TABLE webhook_deliveries (
  id TEXT PRIMARY KEY,
  endpoint_id TEXT NOT NULL,
  tenant_id TEXT NOT NULL,
  event_type TEXT NOT NULL,
  event_id TEXT NOT NULL,
  payload TEXT NOT NULL,
  status TEXT NOT NULL,
  attempt_count INTEGER NOT NULL,
  attempts TEXT NOT NULL,
  next_attempt_at INTEGER,
  claimed_by TEXT,
  claimed_until INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX webhook_deliveries_event ON webhook_deliveries(endpoint_id, event_id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_listing ON webhook_deliveries(endpoint_id, created_at DESC, id DESC);
)sql"},
      // The images still in the pipeline, for the priority lanes' time estimates.
      {6, "CREATE INDEX images_waiting ON images(created_at) WHERE status IN ('uploaded', 'processing');"},
      // The steps running now, per step, for the jobs page (GET /api/v1/jobs).
      {7, "CREATE INDEX steps_running ON steps(step) WHERE status = 'running';"},
      // The near-duplicate check's finding, and the listing of a tenant's near-duplicates.
      {8, R"sql(
ALTER TABLE images ADD COLUMN duplicate_of TEXT;
ALTER TABLE images ADD COLUMN duplicate_score REAL;
ALTER TABLE images ADD COLUMN duplicate_model TEXT;
CREATE INDEX images_duplicates ON images(tenant_id, created_at DESC, image_id DESC) WHERE duplicate_of IS NOT NULL;
)sql"},
  };
  return kMigrations;
}

constexpr const char* kImageColumns =
    "image_id, tenant_id, file_name, storage_path, file_size, content_type, sha256, width, height,"
    " format, color_profile, uploaded_by, processing_options, models, status, idempotency_key,"
    " thumbnail_path, error_code, error_message, correlation_id, created_at, updated_at,"
    " searchable_after, duplicate_of, duplicate_score, duplicate_model";

ImageRecord read_image(const SqliteStatement& s) {
  ImageRecord r;
  r.image_id = s.text(0);
  r.tenant_id = s.text(1);
  r.file_name = s.text(2);
  r.storage_path = s.text(3);
  r.file_size = s.int64(4);
  r.content_type = s.text(5);
  r.sha256 = s.text(6);
  r.width = static_cast<int>(s.int64(7));
  r.height = static_cast<int>(s.int64(8));
  r.format = s.text(9);
  r.color_profile = s.text(10);
  r.uploaded_by = s.text(11);
  r.processing_options_json = s.text(12);
  r.models = split_models(s.text(13));
  r.status = parse_image_status(s.text(14)).value_or(ImageStatus::kUploaded);
  r.idempotency_key = s.text(15);
  r.thumbnail_path = s.text(16);
  r.error_code = s.text(17);
  r.error_message = s.text(18);
  r.correlation_id = s.text(19);
  r.created_at = from_ms(s.int64(20));
  r.updated_at = from_ms(s.int64(21));
  if (!s.is_null(22)) r.searchable_after = from_ms(s.int64(22));
  if (!s.is_null(23)) r.duplicate_of = DuplicateOf{s.text(23), s.real(24), s.text(25)};
  return r;
}

StepRecord read_step(const SqliteStatement& s) {
  StepRecord r;
  r.image_id = s.text(0);
  r.model = s.text(1);
  r.step = s.text(2);
  const std::string st = s.text(3);
  r.status = st == "running" ? StepStatus::kRunning
             : st == "completed" ? StepStatus::kCompleted
             : st == "failed" ? StepStatus::kFailed
                              : StepStatus::kPending;
  r.attempts = static_cast<int>(s.int64(4));
  if (!s.is_null(5)) r.started_at = from_ms(s.int64(5));
  if (!s.is_null(6)) r.completed_at = from_ms(s.int64(6));
  if (!s.is_null(7)) r.duration_ms = s.int64(7);
  r.last_error = s.text(8);
  r.collection_name = s.text(9);
  return r;
}

DeadLetter read_dead_letter(const SqliteStatement& s) {
  DeadLetter d;
  d.id = s.int64(0);
  d.topic = s.text(1);
  d.key = s.text(2);
  d.payload = s.text(3);
  d.stage = s.text(4);
  d.error_code = s.text(5);
  d.error_message = s.text(6);
  d.image_id = s.text(7);
  d.tenant_id = s.text(8);
  d.attempts = static_cast<int>(s.int64(9));
  d.created_at = from_ms(s.int64(10));
  if (!s.is_null(11)) d.replayed_at = from_ms(s.int64(11));
  return d;
}

constexpr const char* kDeadLetterColumns =
    "id, topic, key, payload, stage, error_code, error_message, image_id, tenant_id, attempts,"
    " created_at, replayed_at";

Error not_found(const std::string& what, const std::string& id) {
  return Error(ErrorCode::kNotFound, what + " not found").with("id", id);
}

constexpr const char* kTenantColumns =
    "id, created_at, max_images, max_bytes, upload_rate, search_rate, image_count, bytes_stored";

Tenant read_tenant(const SqliteStatement& s) {
  Tenant t;
  t.id = s.text(0);
  t.created_at = from_ms(s.int64(1));
  if (!s.is_null(2)) t.limits.max_images = s.int64(2);
  if (!s.is_null(3)) t.limits.max_bytes = s.int64(3);
  if (!s.is_null(4)) t.limits.upload_rate = s.real(4);
  if (!s.is_null(5)) t.limits.search_rate = s.real(5);
  t.image_count = s.int64(6);
  t.bytes_stored = s.int64(7);
  return t;
}

void bind_limits(SqliteStatement& s, int first, const TenantLimits& l) {
  l.max_images ? s.bind(first, *l.max_images) : s.bind_null(first);
  l.max_bytes ? s.bind(first + 1, *l.max_bytes) : s.bind_null(first + 1);
  l.upload_rate ? s.bind(first + 2, *l.upload_rate) : s.bind_null(first + 2);
  l.search_rate ? s.bind(first + 3, *l.search_rate) : s.bind_null(first + 3);
}

constexpr const char* kApiKeyColumns = "id, tenant_id, name, prefix, created_at, expires_at, revoked_at, last_used_at";

ApiKey read_api_key(const SqliteStatement& s) {
  ApiKey k;
  k.id = s.text(0);
  k.tenant_id = s.text(1);
  k.name = s.text(2);
  k.prefix = s.text(3);
  k.created_at = from_ms(s.int64(4));
  if (!s.is_null(5)) k.expires_at = from_ms(s.int64(5));
  if (!s.is_null(6)) k.revoked_at = from_ms(s.int64(6));
  if (!s.is_null(7)) k.last_used_at = from_ms(s.int64(7));
  return k;
}

// Shared by the transaction object and the store's own one-shot writes.
Status insert_outbox(SqliteConnection& c, const OutboxMessage& m, Timestamp now) {
  auto q = c.prepare("INSERT INTO outbox (topic, key, headers, payload, created_at) VALUES (?, ?, ?, ?, ?)");
  if (!q) return std::move(q).error();
  (*q)->bind(1, m.topic).bind(2, m.key).bind(3, headers_to_json(m.headers)).bind(4, m.payload).bind(5, to_ms(now));
  return (*q)->run();
}

class SqliteTx final : public MetadataTx {
 public:
  SqliteTx(SqliteConnection& c, Timestamp now, const LogAppender& append,
           std::shared_ptr<DeliveryListener> queued = nullptr)
      : c_(c), now_(now), append_(append), queued_(std::move(queued)) {}

  Result<bool> is_processed(const std::string& group, const std::string& event_id) override {
    auto q = c_.prepare("SELECT 1 FROM processed_events WHERE consumer_group = ? AND event_id = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, group).bind(2, event_id);
    return (*q)->step();
  }

  Status mark_processed(const std::string& group, const std::string& event_id) override {
    auto q = c_.prepare("INSERT OR IGNORE INTO processed_events (consumer_group, event_id, processed_at) VALUES (?, ?, ?)");
    if (!q) return std::move(q).error();
    (*q)->bind(1, group).bind(2, event_id).bind(3, to_ms(now_));
    return (*q)->run();
  }

  Result<ImageRecord> get_image(const std::string& image_id) override {
    auto q = c_.prepare(std::string("SELECT ") + kImageColumns + " FROM images WHERE image_id = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, image_id);
    auto row = (*q)->step();
    if (!row) return std::move(row).error();
    if (!*row) return not_found("image", image_id);
    return read_image(**q);
  }

  Status set_image_status(const std::string& image_id, ImageStatus status, const std::string& code,
                          const std::string& message) override {
    auto q = c_.prepare("UPDATE images SET status = ?, error_code = ?, error_message = ?, updated_at = ? WHERE image_id = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, image_status_name(status)).bind_opt(2, code).bind_opt(3, message).bind(4, to_ms(now_)).bind(5, image_id);
    return (*q)->run();
  }

  Status set_thumbnail(const std::string& image_id, const std::string& path) override {
    auto q = c_.prepare("UPDATE images SET thumbnail_path = ?, updated_at = ? WHERE image_id = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, path).bind(2, to_ms(now_)).bind(3, image_id);
    return (*q)->run();
  }

  Status set_duplicate_of(const std::string& image_id, const DuplicateOf& d) override {
    auto q = c_.prepare("UPDATE images SET duplicate_of = ?, duplicate_score = ?, duplicate_model = ?, updated_at = ?"
                        " WHERE image_id = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, d.image_id).bind(2, d.score).bind(3, d.model).bind(4, to_ms(now_)).bind(5, image_id);
    return (*q)->run();
  }

  Result<bool> claim_completion(const std::string& image_id, Timestamp searchable_after) override {
    auto q = c_.prepare(
        "UPDATE images SET completion_claimed = 1, status = 'completed', searchable_after = ?,"
        " error_code = NULL, error_message = NULL, updated_at = ? WHERE image_id = ? AND completion_claimed = 0");
    if (!q) return std::move(q).error();
    (*q)->bind(1, to_ms(searchable_after)).bind(2, to_ms(now_)).bind(3, image_id);
    if (auto st = (*q)->run(); !st) return std::move(st).error();
    return c_.changes() == 1;
  }

  Result<std::vector<StepRecord>> get_steps(const std::string& image_id) override {
    auto q = c_.prepare(
        "SELECT image_id, model, step, status, attempts, started_at, completed_at, duration_ms,"
        " last_error, collection_name FROM steps WHERE image_id = ? ORDER BY model, step");
    if (!q) return std::move(q).error();
    (*q)->bind(1, image_id);
    std::vector<StepRecord> out;
    while (true) {
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      out.push_back(read_step(**q));
    }
    return out;
  }

  Status upsert_step(const StepRecord& s) override {
    auto q = c_.prepare(
        "INSERT INTO steps (image_id, model, step, status, attempts, started_at, completed_at,"
        " duration_ms, last_error, collection_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (image_id, model, step) DO UPDATE SET status = excluded.status,"
        " attempts = excluded.attempts, started_at = excluded.started_at,"
        " completed_at = excluded.completed_at, duration_ms = excluded.duration_ms,"
        " last_error = excluded.last_error, collection_name = excluded.collection_name");
    if (!q) return std::move(q).error();
    auto& st = **q;
    st.bind(1, s.image_id).bind(2, s.model).bind(3, s.step).bind(4, step_status_name(s.status)).bind(5, s.attempts);
    s.started_at ? st.bind(6, to_ms(*s.started_at)) : st.bind_null(6);
    s.completed_at ? st.bind(7, to_ms(*s.completed_at)) : st.bind_null(7);
    s.duration_ms ? st.bind(8, *s.duration_ms) : st.bind_null(8);
    st.bind_opt(9, s.last_error).bind_opt(10, s.collection_name);
    return st.run();
  }

  Status enqueue(const OutboxMessage& m) override {
    if (append_) return append_(c_, m);
    return insert_outbox(c_, m, now_);
  }

  Status add_dead_letter(const DeadLetter& d) override {
    auto q = c_.prepare(
        "INSERT INTO dead_letters (topic, key, payload, stage, error_code, error_message, image_id,"
        " tenant_id, attempts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (!q) return std::move(q).error();
    (*q)->bind(1, d.topic).bind(2, d.key).bind(3, d.payload).bind(4, d.stage).bind(5, d.error_code)
        .bind(6, d.error_message).bind_opt(7, d.image_id).bind_opt(8, d.tenant_id).bind(9, d.attempts)
        .bind(10, to_ms(now_));
    return (*q)->run();
  }

  Status queue_webhook(const WebhookEvent& e) override { return sqlite_queue_webhook(c_, e, now_, queued_); }

  Status schedule_retry(Timestamp due_at, const OutboxMessage& m) override {
    auto q = c_.prepare("INSERT INTO scheduled_retries (due_at, topic, key, headers, payload) VALUES (?, ?, ?, ?, ?)");
    if (!q) return std::move(q).error();
    (*q)->bind(1, to_ms(due_at)).bind(2, m.topic).bind(3, m.key).bind(4, headers_to_json(m.headers)).bind(5, m.payload);
    return (*q)->run();
  }

 private:
  SqliteConnection& c_;
  Timestamp now_;
  const LogAppender& append_;
  std::shared_ptr<DeliveryListener> queued_;
};

}  // namespace

Result<std::unique_ptr<SqliteMetadataStore>> SqliteMetadataStore::open(SqliteDatabase& db,
                                                                       const Clock& clock,
                                                                       LogAppender append) {
  if (auto st = db.migrate("metadata", migrations()); !st) return std::move(st).error();
  return std::unique_ptr<SqliteMetadataStore>(new SqliteMetadataStore(db, clock, std::move(append)));
}

Status SqliteMetadataStore::transact(const std::function<Status(MetadataTx&)>& fn) {
  return db_.write([&](SqliteConnection& c) {
    SqliteTx tx(c, clock_.now(), append_, queued_);
    return fn(tx);
  });
}

Status SqliteMetadataStore::create_tenant(const Tenant& t) {
  return db_.write([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(
        "INSERT INTO tenants (id, created_at, max_images, max_bytes, upload_rate, search_rate) VALUES (?, ?, ?, ?, ?, ?)");
    if (!q) return std::move(q).error();
    (*q)->bind(1, t.id).bind(2, to_ms(t.created_at));
    bind_limits(**q, 3, t.limits);
    auto st = (*q)->run();
    if (!st && st.error().code == ErrorCode::kAlreadyExists)
      return Error(ErrorCode::kAlreadyExists, "tenant already exists").with("tenant", t.id);
    return st;
  });
}

Result<Tenant> SqliteMetadataStore::get_tenant(const std::string& id) {
  Tenant t;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(std::string("SELECT ") + kTenantColumns + " FROM tenants WHERE id = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, id);
    auto row = (*q)->step();
    if (!row) return std::move(row).error();
    if (!*row) return not_found("tenant", id);
    t = read_tenant(**q);
    return {};
  });
  if (!st) return std::move(st).error();
  return t;
}

Result<std::vector<Tenant>> SqliteMetadataStore::list_tenants() {
  std::vector<Tenant> out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(std::string("SELECT ") + kTenantColumns + " FROM tenants ORDER BY id");
    if (!q) return std::move(q).error();
    while (true) {
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (!*row) return {};
      out.push_back(read_tenant(**q));
    }
  });
  if (!st) return std::move(st).error();
  return out;
}

Status SqliteMetadataStore::set_tenant_limits(const std::string& id, const TenantLimits& limits) {
  return db_.write([&](SqliteConnection& c) -> Status {
    auto q = c.prepare("UPDATE tenants SET max_images = ?, max_bytes = ?, upload_rate = ?, search_rate = ? WHERE id = ?");
    if (!q) return std::move(q).error();
    bind_limits(**q, 1, limits);
    (*q)->bind(5, id);
    if (auto st = (*q)->run(); !st) return st;
    if (c.changes() == 0) return not_found("tenant", id);
    return {};
  });
}

Status SqliteMetadataStore::add_api_key(const ApiKey& key, const std::string& key_sha256) {
  return db_.write([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(
        "INSERT OR IGNORE INTO api_keys (key_sha256, tenant_id, created_at, id, name, prefix, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)");
    if (!q) return std::move(q).error();
    (*q)->bind(1, key_sha256).bind(2, key.tenant_id).bind(3, to_ms(key.created_at)).bind(4, key.id)
        .bind(5, key.name).bind(6, key.prefix);
    key.expires_at ? (*q)->bind(7, to_ms(*key.expires_at)) : (*q)->bind_null(7);
    return (*q)->run();
  });
}

Result<ApiKey> SqliteMetadataStore::find_api_key(const std::string& key_sha256) {
  ApiKey key;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(std::string("SELECT ") + kApiKeyColumns + ", key_sha256 FROM api_keys WHERE key_sha256 = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, key_sha256);
    auto row = (*q)->step();
    if (!row) return std::move(row).error();
    // The lookup is by hash; comparing the hashes again in constant time costs nothing.
    if (!*row || !constant_time_equal((*q)->text(8), key_sha256)) return Error(ErrorCode::kNotFound, "unknown API key");
    key = read_api_key(**q);
    return {};
  });
  if (!st) return std::move(st).error();
  return key;
}

Result<std::vector<ApiKey>> SqliteMetadataStore::list_api_keys(const std::string& tenant_id) {
  std::vector<ApiKey> out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(std::string("SELECT ") + kApiKeyColumns + " FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id");
    if (!q) return std::move(q).error();
    (*q)->bind(1, tenant_id);
    while (true) {
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (!*row) return {};
      out.push_back(read_api_key(**q));
    }
  });
  if (!st) return std::move(st).error();
  return out;
}

Status SqliteMetadataStore::revoke_api_key(const std::string& tenant_id, const std::string& key_id, Timestamp at) {
  return db_.write([&](SqliteConnection& c) -> Status {
    auto q = c.prepare("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE tenant_id = ? AND id = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, to_ms(at)).bind(2, tenant_id).bind(3, key_id);
    if (auto st = (*q)->run(); !st) return st;
    if (c.changes() == 0) return not_found("API key", key_id);
    return {};
  });
}

Status SqliteMetadataStore::touch_api_key(const std::string& key_id, Timestamp at) {
  return db_.write([&](SqliteConnection& c) -> Status {
    auto q = c.prepare("UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)");
    if (!q) return std::move(q).error();
    (*q)->bind(1, to_ms(at)).bind(2, key_id).bind(3, to_ms(at));
    return (*q)->run();
  });
}

Result<double> SqliteMetadataStore::take_rate_token(const std::string& bucket, double rate, double burst, Timestamp now) {
  std::lock_guard lock(buckets_mu_);
  if (buckets_.size() > 100000) buckets_.clear();  // bounded: a full bucket is the state it would refill to
  auto [it, fresh] = buckets_.try_emplace(bucket, RateBucket{burst, to_ms(now)});
  return it->second.take(rate, burst, to_ms(now));
}

Result<CreateImageOutcome> SqliteMetadataStore::create_image(
    const ImageRecord& image, bool skip_duplicate_check,
    const std::function<OutboxMessage(const ImageRecord&)>& make_event, const StorageQuota& quota) {
  CreateImageOutcome out;
  auto st = db_.write([&](SqliteConnection& c) -> Status {
    auto find_one = [&](const std::string& where, const std::string& a, const std::string& b) -> Result<bool> {
      auto q = c.prepare(std::string("SELECT ") + kImageColumns + " FROM images WHERE " + where +
                         " ORDER BY created_at LIMIT 1");
      if (!q) return std::move(q).error();
      (*q)->bind(1, a).bind(2, b);
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (*row) out.image = read_image(**q);
      return *row;
    };
    if (!image.idempotency_key.empty()) {
      auto found = find_one("tenant_id = ? AND idempotency_key = ?", image.tenant_id, image.idempotency_key);
      if (!found) return std::move(found).error();
      if (*found) {
        out.kind = CreateImageOutcome::Kind::kIdempotentReplay;
        return {};
      }
    }
    if (!skip_duplicate_check) {
      auto found = find_one("tenant_id = ? AND sha256 = ?", image.tenant_id, image.sha256);
      if (!found) return std::move(found).error();
      if (*found) {
        out.kind = CreateImageOutcome::Kind::kDuplicate;
        return {};
      }
    }
    // Usage first: the writer lock makes the check and the increment one step.
    auto usage = c.prepare("SELECT image_count, bytes_stored FROM tenants WHERE id = ?");
    if (!usage) return std::move(usage).error();
    (*usage)->bind(1, image.tenant_id);
    auto has_row = (*usage)->step();
    if (!has_row) return std::move(has_row).error();
    if (*has_row) {
      const int64_t count = (*usage)->int64(0), bytes = (*usage)->int64(1);
      (*usage)->reset();
      if (auto st = check_quota(image, quota, count, bytes); !st) return st;
      auto add = c.prepare("UPDATE tenants SET image_count = image_count + 1, bytes_stored = bytes_stored + ? WHERE id = ?");
      if (!add) return std::move(add).error();
      (*add)->bind(1, image.file_size).bind(2, image.tenant_id);
      if (auto st = (*add)->run(); !st) return st;
    }
    auto q = c.prepare(
        "INSERT INTO images (image_id, tenant_id, file_name, storage_path, file_size, content_type,"
        " sha256, width, height, format, color_profile, uploaded_by, processing_options, models,"
        " status, idempotency_key, thumbnail_path, correlation_id, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (!q) return std::move(q).error();
    auto& s = **q;
    s.bind(1, image.image_id).bind(2, image.tenant_id).bind(3, image.file_name).bind(4, image.storage_path)
        .bind(5, image.file_size).bind(6, image.content_type).bind(7, image.sha256).bind(8, image.width)
        .bind(9, image.height).bind(10, image.format).bind(11, image.color_profile).bind(12, image.uploaded_by)
        .bind(13, image.processing_options_json).bind(14, join_models(image.models))
        .bind(15, image_status_name(image.status)).bind_opt(16, image.idempotency_key)
        .bind_opt(17, image.thumbnail_path).bind(18, image.correlation_id)
        .bind(19, to_ms(image.created_at)).bind(20, to_ms(image.updated_at));
    if (auto r = s.run(); !r) return r;
    out.image = image;
    out.kind = CreateImageOutcome::Kind::kCreated;
    const OutboxMessage event = make_event(image);
    if (auto st = append_ ? append_(c, event) : insert_outbox(c, event, clock_.now()); !st) return st;
    return sqlite_queue_webhook(c, WebhookEvent{image.tenant_id, "image.uploaded", image.correlation_id, event.payload},
                                clock_.now(), queued_);
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<ImageRecord> SqliteMetadataStore::get_image(const std::string& tenant_id, const std::string& image_id) {
  ImageRecord out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(std::string("SELECT ") + kImageColumns + " FROM images WHERE image_id = ? AND tenant_id = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, image_id).bind(2, tenant_id);
    auto row = (*q)->step();
    if (!row) return std::move(row).error();
    if (!*row) return not_found("image", image_id);
    out = read_image(**q);
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<std::vector<ImageRecord>> SqliteMetadataStore::get_images(const std::string& tenant_id,
                                                                 const std::vector<std::string>& image_ids) {
  std::vector<ImageRecord> out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    out.clear();
    auto q = c.prepare(std::string("SELECT ") + kImageColumns + " FROM images WHERE image_id = ? AND tenant_id = ?");
    if (!q) return std::move(q).error();
    for (const auto& id : image_ids) {
      (*q)->reset();
      (*q)->bind(1, id).bind(2, tenant_id);
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (*row) out.push_back(read_image(**q));
    }
    (*q)->reset();
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<std::vector<StepRecord>> SqliteMetadataStore::get_steps(const std::string& image_id) {
  std::vector<StepRecord> out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    SqliteTx tx(c, clock_.now(), append_);
    auto steps = tx.get_steps(image_id);
    if (!steps) return std::move(steps).error();
    out = std::move(steps).value();
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<ImagePage> SqliteMetadataStore::list_images(const std::string& tenant_id,
                                                   std::optional<ImageStatus> status, int limit,
                                                   const std::string& cursor, bool duplicates_only) {
  int64_t cursor_ms = INT64_MAX;
  std::string cursor_id = "\x7f";
  if (!cursor.empty()) {
    const auto sep = cursor.find('_');
    try {
      cursor_ms = std::stoll(cursor.substr(0, sep));
    } catch (...) {
      return Error(ErrorCode::kInvalidArgument, "malformed cursor").with("cursor", cursor);
    }
    if (sep == std::string::npos) return Error(ErrorCode::kInvalidArgument, "malformed cursor").with("cursor", cursor);
    cursor_id = cursor.substr(sep + 1);
  }
  ImagePage page;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    std::string sql = std::string("SELECT ") + kImageColumns +
                      " FROM images WHERE tenant_id = ?1 AND (created_at < ?2 OR (created_at = ?2 AND image_id < ?3))";
    if (status) sql += " AND status = ?5";
    if (duplicates_only) sql += " AND duplicate_of IS NOT NULL";
    sql += " ORDER BY created_at DESC, image_id DESC LIMIT ?4";
    auto q = c.prepare(sql);
    if (!q) return std::move(q).error();
    (*q)->bind(1, tenant_id).bind(2, cursor_ms).bind(3, cursor_id).bind(4, static_cast<int64_t>(limit + 1));
    if (status) (*q)->bind(5, image_status_name(*status));
    while (true) {
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      page.images.push_back(read_image(**q));
    }
    return {};
  });
  if (!st) return std::move(st).error();
  if (static_cast<int>(page.images.size()) > limit) {
    page.images.resize(static_cast<size_t>(limit));
    const auto& last = page.images.back();
    page.next_cursor = std::to_string(to_ms(last.created_at)) + "_" + last.image_id;
  }
  return page;
}

Result<std::vector<std::string>> SqliteMetadataStore::existing_images(const std::vector<std::string>& image_ids) {
  std::vector<std::string> out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare("SELECT 1 FROM images WHERE image_id = ?");
    if (!q) return std::move(q).error();
    for (const auto& id : image_ids) {
      (*q)->reset();
      (*q)->bind(1, id);
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (*row) out.push_back(id);
    }
    (*q)->reset();
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Status SqliteMetadataStore::delete_image(const std::string& tenant_id, const std::string& image_id,
                                         const WebhookEvent* deleted) {
  return db_.write([&](SqliteConnection& c) -> Status {
    auto u = c.prepare(
        "UPDATE tenants SET image_count = image_count - 1, bytes_stored = bytes_stored -"
        " (SELECT file_size FROM images WHERE image_id = ?1 AND tenant_id = ?2)"
        " WHERE id = ?2 AND EXISTS (SELECT 1 FROM images WHERE image_id = ?1 AND tenant_id = ?2)");
    if (!u) return std::move(u).error();
    (*u)->bind(1, image_id).bind(2, tenant_id);
    if (auto st = (*u)->run(); !st) return st;
    auto q = c.prepare("DELETE FROM images WHERE image_id = ? AND tenant_id = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, image_id).bind(2, tenant_id);
    if (auto st = (*q)->run(); !st) return st;
    if (c.changes() == 0) return not_found("image", image_id);
    auto s = c.prepare("DELETE FROM steps WHERE image_id = ?");
    if (!s) return std::move(s).error();
    (*s)->bind(1, image_id);
    if (auto st = (*s)->run(); !st) return st;
    return deleted ? sqlite_queue_webhook(c, *deleted, clock_.now(), queued_) : Status();
  });
}

Result<std::vector<std::pair<std::string, int64_t>>> SqliteMetadataStore::count_by_status() {
  std::vector<std::pair<std::string, int64_t>> out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare("SELECT status, COUNT(*) FROM images GROUP BY status ORDER BY status");
    if (!q) return std::move(q).error();
    while (true) {
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (!*row) return {};
      out.emplace_back((*q)->text(0), (*q)->int64(1));
    }
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<std::vector<StepActivity>> SqliteMetadataStore::step_activity(Timestamp since) {
  std::vector<StepActivity> out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    // Two index-only counts: steps_running and steps_recent (both partial indexes on status).
    auto q = c.prepare(
        "SELECT step, SUM(running), SUM(completed) FROM ("
        " SELECT step, COUNT(*) AS running, 0 AS completed FROM steps WHERE status = 'running' GROUP BY step"
        " UNION ALL SELECT step, 0, COUNT(*) FROM steps WHERE status = 'completed' AND completed_at >= ? GROUP BY step)"
        " GROUP BY step ORDER BY step");
    if (!q) return std::move(q).error();
    (*q)->bind(1, to_ms(since));
    while (true) {
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (!*row) return {};
      out.push_back(StepActivity{(*q)->text(0), (*q)->int64(1), (*q)->int64(2)});
    }
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<std::optional<double>> SqliteMetadataStore::recent_step_duration_ms(const std::string& step, int window) {
  std::optional<double> out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(
        "SELECT AVG(duration_ms) FROM (SELECT duration_ms FROM steps WHERE step = ? AND status = 'completed'"
        " AND duration_ms IS NOT NULL ORDER BY completed_at DESC LIMIT ?)");
    if (!q) return std::move(q).error();
    (*q)->bind(1, step).bind(2, static_cast<int64_t>(window));
    auto row = (*q)->step();
    if (!row) return std::move(row).error();
    if (*row && !(*q)->is_null(0)) out = (*q)->real(0);
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<ExtractionBacklog> SqliteMetadataStore::extraction_backlog(const ImageRecord& image, Timestamp since) {
  ExtractionBacklog out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    out = {};
    auto q = c.prepare(
        "SELECT COALESCE(json_extract(processing_options, '$.priority'), 'normal'), COUNT(*),"
        " SUM(CASE WHEN created_at < ?1 OR (created_at = ?1 AND image_id < ?2) THEN 1 ELSE 0 END)"
        " FROM images WHERE status IN ('uploaded', 'processing') GROUP BY 1");
    if (!q) return std::move(q).error();
    (*q)->bind(1, to_ms(image.created_at)).bind(2, image.image_id);
    while (true) {
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      const Priority lane = parse_priority((*q)->text(0)).value_or(Priority::kNormal);
      out.waiting[static_cast<size_t>(lane)] += (*q)->int64(1);
      out.ahead[static_cast<size_t>(lane)] += (*q)->int64(2);
    }
    auto r = c.prepare("SELECT COUNT(*), MIN(completed_at) FROM steps WHERE step = 'vector_indexing'"
                       " AND status = 'completed' AND completed_at >= ?");
    if (!r) return std::move(r).error();
    (*r)->bind(1, to_ms(since));
    auto row = (*r)->step();
    if (!row) return std::move(row).error();
    if (*row) {
      out.recent_completions = (*r)->int64(0);
      if (!(*r)->is_null(1)) out.first_completion = Timestamp(std::chrono::milliseconds((*r)->int64(1)));
    }
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<std::vector<OutboxRow>> SqliteMetadataStore::pending_outbox(const std::string& relay_id, int limit,
                                                                   std::chrono::milliseconds lease) {
  std::vector<OutboxRow> out;
  const int64_t now = to_ms(clock_.now());
  auto st = db_.write([&](SqliteConnection& c) -> Status {
    out.clear();
    auto q = c.prepare("SELECT seq, topic, key, headers, payload, claimed_by, claimed_until FROM outbox"
                       " WHERE sent_at IS NULL ORDER BY seq LIMIT ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, static_cast<int64_t>(limit));
    while (true) {
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      const bool held_by_other = !(*q)->is_null(6) && (*q)->int64(6) >= now && (*q)->text(5) != relay_id;
      if (held_by_other) break;  // never publish past another relay's rows
      out.push_back(OutboxRow{(*q)->int64(0),
                              OutboxMessage{(*q)->text(1), (*q)->text(2), (*q)->text(4),
                                            headers_from_json((*q)->text(3))}});
    }
    (*q)->reset();
    auto claim = c.prepare("UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE seq = ?");
    if (!claim) return std::move(claim).error();
    for (const auto& r : out) {
      (*claim)->reset();
      (*claim)->bind(1, relay_id).bind(2, now + lease.count()).bind(3, r.seq);
      if (auto s = (*claim)->run(); !s) return s;
    }
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Status SqliteMetadataStore::mark_outbox_sent(const std::vector<int64_t>& seqs) {
  if (seqs.empty()) return {};
  return db_.write([&](SqliteConnection& c) -> Status {
    // Sent rows are deleted rather than kept: the bus holds the history from here on.
    auto q = c.prepare("DELETE FROM outbox WHERE seq = ?");
    if (!q) return std::move(q).error();
    for (int64_t seq : seqs) {
      (*q)->reset();
      (*q)->bind(1, seq);
      if (auto st = (*q)->run(); !st) return st;
    }
    return {};
  });
}

Result<int64_t> SqliteMetadataStore::outbox_backlog() {
  return db_.read_int64("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL");
}

Result<int> SqliteMetadataStore::release_due_retries(Timestamp now, int limit) {
  int moved = 0;
  auto st = db_.write([&](SqliteConnection& c) -> Status {
    auto q = c.prepare("SELECT id, topic, key, headers, payload FROM scheduled_retries WHERE due_at <= ? ORDER BY due_at, id LIMIT ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, to_ms(now)).bind(2, static_cast<int64_t>(limit));
    std::vector<std::pair<int64_t, OutboxMessage>> due;
    while (true) {
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      due.emplace_back((*q)->int64(0), OutboxMessage{(*q)->text(1), (*q)->text(2), (*q)->text(4),
                                                     headers_from_json((*q)->text(3))});
    }
    (*q)->reset();
    SqliteTx tx(c, now, append_);
    for (auto& [id, message] : due) {
      if (auto e = tx.enqueue(message); !e) return e;
      auto d = c.prepare("DELETE FROM scheduled_retries WHERE id = ?");
      if (!d) return std::move(d).error();
      (*d)->bind(1, id);
      if (auto e = (*d)->run(); !e) return e;
      ++moved;
    }
    return {};
  });
  if (!st) return std::move(st).error();
  return moved;
}

Result<std::optional<Timestamp>> SqliteMetadataStore::next_retry_due() {
  std::optional<Timestamp> out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare("SELECT MIN(due_at) FROM scheduled_retries");
    if (!q) return std::move(q).error();
    auto row = (*q)->step();
    if (!row) return std::move(row).error();
    if (*row && !(*q)->is_null(0)) out = from_ms((*q)->int64(0));
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<std::vector<DeadLetter>> SqliteMetadataStore::list_dead_letters(bool include_replayed, int limit,
                                                                     const std::string& tenant_id) {
  std::vector<DeadLetter> out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    std::string sql = std::string("SELECT ") + kDeadLetterColumns + " FROM dead_letters WHERE 1 = 1";
    if (!include_replayed) sql += " AND replayed_at IS NULL";
    if (!tenant_id.empty()) sql += " AND tenant_id = ?2";
    sql += " ORDER BY id LIMIT ?1";
    auto q = c.prepare(sql);
    if (!q) return std::move(q).error();
    (*q)->bind(1, static_cast<int64_t>(limit));
    if (!tenant_id.empty()) (*q)->bind(2, tenant_id);
    while (true) {
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (!*row) return {};
      out.push_back(read_dead_letter(**q));
    }
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<std::vector<ScheduledRetry>> SqliteMetadataStore::list_scheduled_retries(int limit) {
  std::vector<ScheduledRetry> out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare("SELECT id, due_at, topic, key, headers, payload FROM scheduled_retries ORDER BY due_at, id LIMIT ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, static_cast<int64_t>(limit));
    while (true) {
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (!*row) return {};
      out.push_back(ScheduledRetry{(*q)->int64(0), from_ms((*q)->int64(1)),
                                   OutboxMessage{(*q)->text(2), (*q)->text(3), (*q)->text(5), headers_from_json((*q)->text(4))}});
    }
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<DeadLetter> SqliteMetadataStore::get_dead_letter(int64_t id) {
  DeadLetter out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(std::string("SELECT ") + kDeadLetterColumns + " FROM dead_letters WHERE id = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, id);
    auto row = (*q)->step();
    if (!row) return std::move(row).error();
    if (!*row) return not_found("dead letter", std::to_string(id));
    out = read_dead_letter(**q);
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Status SqliteMetadataStore::replay_dead_letter(int64_t id, const OutboxMessage& message) {
  return db_.write([&](SqliteConnection& c) -> Status {
    auto q = c.prepare("UPDATE dead_letters SET replayed_at = ? WHERE id = ? AND replayed_at IS NULL");
    if (!q) return std::move(q).error();
    (*q)->bind(1, to_ms(clock_.now())).bind(2, id);
    if (auto st = (*q)->run(); !st) return st;
    if (c.changes() == 0)
      return Error(ErrorCode::kFailedPrecondition, "dead letter does not exist or was already replayed")
          .with("id", std::to_string(id));
    // The image is being processed again (unless it completed meanwhile).
    auto img = c.prepare("UPDATE images SET status = 'processing', error_code = NULL, error_message = NULL,"
                         " updated_at = ? WHERE image_id = (SELECT image_id FROM dead_letters WHERE id = ?)"
                         " AND completion_claimed = 0");
    if (!img) return std::move(img).error();
    (*img)->bind(1, to_ms(clock_.now())).bind(2, id);
    if (auto st = (*img)->run(); !st) return st;
    SqliteTx tx(c, clock_.now(), append_);
    return tx.enqueue(message);
  });
}

Status SqliteMetadataStore::trim_processed(Timestamp before) {
  return db_.write([&](SqliteConnection& c) -> Status {
    auto q = c.prepare("DELETE FROM processed_events WHERE processed_at < ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, to_ms(before));
    return (*q)->run();
  });
}

Status SqliteMetadataStore::ping() {
  return db_.read([](SqliteConnection& c) { return c.exec("SELECT 1"); });
}

}  // namespace deeplens
