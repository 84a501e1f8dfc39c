#include "store/postgres/postgres_metadata_store.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <set>
#include <thread>

#include "common/sha256.h"
#include "events/priority.h"

namespace deeplens {
namespace {

constexpr const char* kComponent = "metadata";
// pg_advisory_xact_lock key serialising migrations between processes that start together.
constexpr int64_t kMigrationLockKey = 0x646c6d6967726174;  // "dlmigrat"
// Namespaces (first key) of the two-key advisory locks; the second key is hashtext(...).
constexpr int kLockProcessedEvent = 1;
constexpr int kLockIdempotencyKey = 2;
constexpr int kLockSha256 = 3;

int64_t to_ms(Timestamp t) { return t.time_since_epoch().count(); }
Timestamp from_ms(int64_t ms) { return Timestamp(std::chrono::milliseconds(ms)); }

std::vector<std::string> split_models(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  std::vector<std::string> out;
  if (j.is_array())
    for (const auto& m : j)
      if (m.is_string()) out.push_back(m.get<std::string>());
  return out;
}

// --- parameters and fields: empty strings / absent values are SQL NULL, like the SQLite store.
const char* opt(const std::string& s) { return s.empty() ? nullptr : s.c_str(); }
std::string opt_ms(const std::optional<Timestamp>& t) { return t ? std::to_string(to_ms(*t)) : std::string(); }
std::string opt_int(const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string(); }
std::optional<int64_t> opt_ms_value(const std::optional<Timestamp>& t) {
  return t ? std::optional<int64_t>(to_ms(*t)) : std::nullopt;
}

std::string text(const pqxx::field& f) { return f.is_null() ? std::string() : std::string(f.c_str(), f.size()); }
int64_t int64(const pqxx::field& f) { return f.is_null() ? 0 : f.as<int64_t>(); }
std::string bytes(const pqxx::field& f) { return f.is_null() ? std::string() : pqxx::binarystring(f).str(); }

const char* const kMigration1 = R"sql(
CREATE TABLE tenants (
  id TEXT COLLATE "C" PRIMARY KEY,
  created_at BIGINT NOT NULL
);
CREATE TABLE api_keys (
  key_sha256 TEXT COLLATE "C" PRIMARY KEY,
  tenant_id TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
  created_at BIGINT NOT NULL
);
CREATE TABLE images (
  image_id TEXT COLLATE "C" PRIMARY KEY,
  tenant_id TEXT COLLATE "C" NOT NULL,
  file_name TEXT NOT NULL,
  storage_path TEXT NOT NULL,
  file_size BIGINT NOT NULL,
  content_type TEXT NOT NULL,
  sha256 TEXT COLLATE "C" NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  format TEXT NOT NULL,
  color_profile TEXT NOT NULL,
  uploaded_by TEXT NOT NULL,
  processing_options TEXT NOT NULL,
  models TEXT NOT NULL,
  status TEXT COLLATE "C" NOT NULL,
  idempotency_key TEXT COLLATE "C",
  thumbnail_path TEXT,
  error_code TEXT,
  error_message TEXT,
  correlation_id TEXT NOT NULL,
  completion_claimed BOOLEAN NOT NULL DEFAULT FALSE,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  searchable_after BIGINT
);
CREATE UNIQUE INDEX images_idempotency ON images(tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX images_sha256 ON images(tenant_id, sha256);
CREATE INDEX images_listing ON images(tenant_id, created_at DESC, image_id DESC);
CREATE TABLE steps (
  image_id TEXT COLLATE "C" NOT NULL,
  model TEXT COLLATE "C" NOT NULL,
  step TEXT COLLATE "C" NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  started_at BIGINT,
  completed_at BIGINT,
  duration_ms BIGINT,
  last_error TEXT,
  collection_name TEXT,
  PRIMARY KEY (image_id, model, step)
);
CREATE INDEX steps_recent ON steps(step, completed_at) WHERE status = 'completed';
CREATE TABLE outbox (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  topic TEXT NOT NULL,
  key TEXT NOT NULL,
  headers TEXT NOT NULL,
  payload BYTEA NOT NULL,
  created_at BIGINT NOT NULL,
  sent_at BIGINT
);
CREATE INDEX outbox_pending ON outbox(seq) WHERE sent_at IS NULL;
CREATE TABLE scheduled_retries (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  due_at BIGINT NOT NULL,
  topic TEXT NOT NULL,
  key TEXT NOT NULL,
  headers TEXT NOT NULL,
  payload BYTEA NOT NULL
);
CREATE INDEX scheduled_retries_due ON scheduled_retries(due_at, id);
CREATE TABLE dead_letters (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  topic TEXT NOT NULL,
  key BYTEA NOT NULL,
  payload BYTEA NOT NULL,
  stage TEXT NOT NULL,
  error_code TEXT NOT NULL,
  error_message TEXT NOT NULL,
  image_id TEXT COLLATE "C",
  tenant_id TEXT COLLATE "C",
  attempts INTEGER NOT NULL,
  created_at BIGINT NOT NULL,
  replayed_at BIGINT
);
CREATE INDEX dead_letters_pending ON dead_letters(id) WHERE replayed_at IS NULL;
CREATE TABLE processed_events (
  consumer_group TEXT COLLATE "C" NOT NULL,
  event_id TEXT COLLATE "C" NOT NULL,
  processed_at BIGINT NOT NULL,
  PRIMARY KEY (consumer_group, event_id)
);
CREATE INDEX processed_events_age ON processed_events(processed_at);
)sql";

struct Migration {
  int version;
  const char* sql;
};
const Migration kMigrations[] = {
    {1, kMigration1},
    // Several relays (api and worker processes) share one outbox: each claims rows for a lease.
    {2, "ALTER TABLE outbox ADD COLUMN claimed_until BIGINT;"},
    // Per-tenant limits and usage; API keys with ids, names, expiry and revocation; token buckets
    // shared by every process on this database.
    {3, R"sql(
ALTER TABLE tenants
  ADD COLUMN max_images BIGINT,
  ADD COLUMN max_bytes BIGINT,
  ADD COLUMN upload_rate DOUBLE PRECISION,
  ADD COLUMN search_rate DOUBLE PRECISION,
  ADD COLUMN image_count BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN bytes_stored BIGINT NOT NULL DEFAULT 0;
UPDATE tenants SET
  image_count = (SELECT COUNT(*) FROM images WHERE images.tenant_id = tenants.id),
  bytes_stored = (SELECT COALESCE(SUM(file_size), 0) FROM images WHERE images.tenant_id = tenants.id);
ALTER TABLE api_keys
  ADD COLUMN id TEXT COLLATE "C",
  ADD COLUMN name TEXT NOT NULL DEFAULT '',
  ADD COLUMN prefix TEXT NOT NULL DEFAULT '',
  ADD COLUMN expires_at BIGINT,
  ADD COLUMN revoked_at BIGINT,
  ADD COLUMN last_used_at BIGINT;
UPDATE api_keys SET id = 'key_' || substr(key_sha256, 1, 16) WHERE id IS NULL;
CREATE UNIQUE INDEX api_keys_id ON api_keys(id);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id, created_at);
CREATE TABLE rate_buckets (
  bucket TEXT COLLATE "C" PRIMARY KEY,
  tokens DOUBLE PRECISION NOT NULL,
  updated_ms BIGINT NOT NULL
);
)sql"},
    // Which relay holds a claimed row: a relay renews its own claims and never passes another's.
    {4, "ALTER TABLE outbox ADD COLUMN claimed_by TEXT;"},
    // Webhook endpoints and their deliveries (queued by the transactions that cause them).
    {5, R"sql(
CREATE TABLE webhook_endpoints (
  id TEXT COLLATE "C" PRIMARY KEY,
  tenant_id TEXT COLLATE "C" NOT NULL,
  url TEXT NOT NULL,
  events TEXT NOT NULL,
  description TEXT NOT NULL,
  enabled BOOLEAN NOT NULL,
  disabled_reason TEXT,
  secret TEXT NOT NULL,
  previous_secret TEXT,
  previous_secret_until BIGINT,
  failing_since BIGINT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints(tenant_id, created_at);
CREATE TABLE webhook_deliveries (
  id TEXT COLLATE "C" PRIMARY KEY,
  endpoint_id TEXT COLLATE "C" NOT NULL,
  tenant_id TEXT COLLATE "C" NOT NULL,
  event_type TEXT NOT NULL,
  event_id TEXT COLLATE "C" NOT NULL,
  payload TEXT NOT NULL,
  status TEXT COLLATE "C" NOT NULL,
  attempt_count INTEGER NOT NULL,
  attempts TEXT NOT NULL,
  next_attempt_at BIGINT,
  claimed_by TEXT,
  claimed_until BIGINT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
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
ALTER TABLE images ADD COLUMN duplicate_of TEXT COLLATE "C", ADD COLUMN duplicate_score DOUBLE PRECISION,
  ADD COLUMN duplicate_model TEXT;
CREATE INDEX images_duplicates ON images(tenant_id, created_at DESC, image_id DESC) WHERE duplicate_of IS NOT NULL;
)sql"},
};


constexpr const char* kImageColumns =
    "image_id, tenant_id, file_name, storage_path, file_size, content_type, sha256, width, height,"
    " format, color_profile, uploaded_by, processing_options, models, status, idempotency_key,"
    " thumbnail_path, error_code, error_message, correlation_id, created_at, updated_at,"
    " searchable_after, duplicate_of, duplicate_score, duplicate_model";

// A text[] literal of [first, last): every element double-quoted, with '"' and '\\' escaped.
template <typename It>
std::string text_array(It first, It last) {
  std::string array = "{";
  for (It it = first; it != last; ++it) {
    array += it != first ? ",\"" : "\"";
    for (char ch : *it) {
      if (ch == '"' || ch == '\\') array += '\\';
      array += ch;
    }
    array += '"';
  }
  array += "}";
  return array;
}

ImageRecord read_image(const pqxx::row& r) {
  ImageRecord i;
  i.image_id = text(r[0]);
  i.tenant_id = text(r[1]);
  i.file_name = text(r[2]);
  i.storage_path = text(r[3]);
  i.file_size = int64(r[4]);
  i.content_type = text(r[5]);
  i.sha256 = text(r[6]);
  i.width = static_cast<int>(int64(r[7]));
  i.height = static_cast<int>(int64(r[8]));
  i.format = text(r[9]);
  i.color_profile = text(r[10]);
  i.uploaded_by = text(r[11]);
  i.processing_options_json = text(r[12]);
  i.models = split_models(text(r[13]));
  i.status = parse_image_status(text(r[14])).value_or(ImageStatus::kUploaded);
  i.idempotency_key = text(r[15]);
  i.thumbnail_path = text(r[16]);
  i.error_code = text(r[17]);
  i.error_message = text(r[18]);
  i.correlation_id = text(r[19]);
  i.created_at = from_ms(int64(r[20]));
  i.updated_at = from_ms(int64(r[21]));
  if (!r[22].is_null()) i.searchable_after = from_ms(int64(r[22]));
  if (!r[23].is_null()) i.duplicate_of = DuplicateOf{text(r[23]), r[24].as<double>(), text(r[25])};
  return i;
}

constexpr const char* kStepColumns =
    "image_id, model, step, status, attempts, started_at, completed_at, duration_ms, last_error,"
    " collection_name";

StepRecord read_step(const pqxx::row& r) {
  StepRecord s;
  s.image_id = text(r[0]);
  s.model = text(r[1]);
  s.step = text(r[2]);
  const std::string st = text(r[3]);
  s.status = st == "running" ? StepStatus::kRunning
             : st == "completed" ? StepStatus::kCompleted
             : st == "failed" ? StepStatus::kFailed
                              : StepStatus::kPending;
  s.attempts = static_cast<int>(int64(r[4]));
  if (!r[5].is_null()) s.started_at = from_ms(int64(r[5]));
  if (!r[6].is_null()) s.completed_at = from_ms(int64(r[6]));
  if (!r[7].is_null()) s.duration_ms = int64(r[7]);
  s.last_error = text(r[8]);
  s.collection_name = text(r[9]);
  return s;
}

constexpr const char* kDeadLetterColumns =
    "id, topic, key, payload, stage, error_code, error_message, image_id, tenant_id, attempts,"
    " created_at, replayed_at";

DeadLetter read_dead_letter(const pqxx::row& r) {
  DeadLetter d;
  d.id = int64(r[0]);
  d.topic = text(r[1]);
  d.key = bytes(r[2]);
  d.payload = bytes(r[3]);
  d.stage = text(r[4]);
  d.error_code = text(r[5]);
  d.error_message = text(r[6]);
  d.image_id = text(r[7]);
  d.tenant_id = text(r[8]);
  d.attempts = static_cast<int>(int64(r[9]));
  d.created_at = from_ms(int64(r[10]));
  if (!r[11].is_null()) d.replayed_at = from_ms(int64(r[11]));
  return d;
}

Error not_found(const std::string& what, const std::string& id) {
  return Error(ErrorCode::kNotFound, what + " not found").with("id", id);
}

constexpr const char* kTenantColumns =
    "id, created_at, max_images, max_bytes, upload_rate, search_rate, image_count, bytes_stored";

Tenant read_tenant(const pqxx::row& r) {
  Tenant t;
  t.id = text(r[0]);
  t.created_at = from_ms(int64(r[1]));
  if (!r[2].is_null()) t.limits.max_images = int64(r[2]);
  if (!r[3].is_null()) t.limits.max_bytes = int64(r[3]);
  if (!r[4].is_null()) t.limits.upload_rate = r[4].as<double>();
  if (!r[5].is_null()) t.limits.search_rate = r[5].as<double>();
  t.image_count = int64(r[6]);
  t.bytes_stored = int64(r[7]);
  return t;
}

constexpr const char* kApiKeyColumns = "id, tenant_id, name, prefix, created_at, expires_at, revoked_at, last_used_at";

ApiKey read_api_key(const pqxx::row& r) {
  ApiKey k;
  k.id = text(r[0]);
  k.tenant_id = text(r[1]);
  k.name = text(r[2]);
  k.prefix = text(r[3]);
  k.created_at = from_ms(int64(r[4]));
  if (!r[5].is_null()) k.expires_at = from_ms(int64(r[5]));
  if (!r[6].is_null()) k.revoked_at = from_ms(int64(r[6]));
  if (!r[7].is_null()) k.last_used_at = from_ms(int64(r[7]));
  return k;
}

// --- errors: every pqxx exception becomes an Error at this boundary.

enum class FailureKind {
  kFatal,     // report as is
  kConflict,  // serialization failure or deadlock: run the transaction again
  kBroken,    // the connection is gone; nothing was committed
  kInDoubt,   // the connection broke during COMMIT
};

struct Failure {
  Error error;
  FailureKind kind = FailureKind::kFatal;
};

// libpq messages span lines ("...failed: Connection refused\n\tIs the server running..."); an
// error that ends up in a JSON body or a log line reads better on one.
std::string one_line(std::string_view s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (c == '\n' || c == '\t' || c == '\r' || c == ' ') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

Error unavailable(std::string_view detail) {
  return Error(ErrorCode::kUnavailable,
               "PostgreSQL is unavailable: " + one_line(detail) + " (retry when the database is reachable again)")
      .with("backend", "postgresql");
}

Failure classify(const std::exception& e) {
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e))
    return {Error(ErrorCode::kUnavailable,
                  "PostgreSQL connection lost during COMMIT; the outcome is unknown: " + one_line(e.what()))
                .with("backend", "postgresql"),
            FailureKind::kInDoubt};
  if (dynamic_cast<const pqxx::broken_connection*>(&e) ||
      dynamic_cast<const pqxx::statement_completion_unknown*>(&e))
    return {unavailable(e.what()), FailureKind::kBroken};
  if (dynamic_cast<const pqxx::transaction_rollback*>(&e))
    return {Error(ErrorCode::kUnavailable, "PostgreSQL transaction conflict: " + one_line(e.what()))
                .with("backend", "postgresql"),
            FailureKind::kConflict};
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    const std::string& state = sql->sqlstate();
    const std::string message = one_line(e.what());
    auto with_state = [&](ErrorCode code, const std::string& text) {
      return Error(code, text).with("sqlstate", state).with("backend", "postgresql");
    };
    if (state == "40001" || state == "40P01")
      return {with_state(ErrorCode::kUnavailable, "PostgreSQL transaction conflict: " + message), FailureKind::kConflict};
    // 08: connection exception; 57P01-3: the server is shutting down or starting up; 53300: too
    // many connections.
    if (state.starts_with("08") || state == "57P01" || state == "57P02" || state == "57P03" || state == "53300")
      return {unavailable(message).with("sqlstate", state), FailureKind::kBroken};
    if (state == "23505") return {with_state(ErrorCode::kAlreadyExists, "already exists: " + message)};
    if (state == "23503") return {with_state(ErrorCode::kNotFound, "referenced row not found: " + message)};
    if (state == "57014") return {with_state(ErrorCode::kTimeout, "PostgreSQL statement timed out: " + message)};
    if (state.starts_with("22")) return {with_state(ErrorCode::kInvalidArgument, "invalid value: " + message)};
    return {with_state(ErrorCode::kInternal, "PostgreSQL error: " + message)};
  }
  return {Error(ErrorCode::kInternal, std::string("PostgreSQL store: ") + one_line(e.what()))
              .with("backend", "postgresql")};
}

// libpq accepts both URIs and keyword strings; add connect_timeout in the matching syntax.
std::string with_connect_timeout(const std::string& url, int seconds) {
  if (seconds <= 0 || url.find("connect_timeout") != std::string::npos) return url;
  const std::string value = std::to_string(seconds);
  if (url.starts_with("postgresql://") || url.starts_with("postgres://"))
    return url + (url.find('?') == std::string::npos ? "?" : "&") + "connect_timeout=" + value;
  return url + (url.empty() ? "" : " ") + "connect_timeout=" + value;
}

// A bounded set of connections, opened lazily and handed out one caller at a time.
class ConnectionPool {
 public:
  ConnectionPool(std::string conninfo, const PostgresOptions& options)
      : conninfo_(std::move(conninfo)), options_(options) {}

  struct Lease {
    std::unique_ptr<pqxx::connection> conn;
    bool fresh = false;  // opened for this call (so a failure says the server is down right now)
  };

  Result<Lease> acquire() {
    std::unique_lock lock(mu_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.acquire_timeout_ms);
    while (idle_.empty() && open_ >= options_.pool_size) {
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() && open_ >= options_.pool_size)
        return Error(ErrorCode::kUnavailable, "all " + std::to_string(options_.pool_size) +
                                                  " PostgreSQL connections stayed busy for " +
                                                  std::to_string(options_.acquire_timeout_ms) +
                                                  " ms; retry later or raise the pool size")
            .with("backend", "postgresql");
    }
    if (!idle_.empty()) {
      Lease lease{std::move(idle_.back()), false};
      idle_.pop_back();
      return lease;
    }
    ++open_;
    lock.unlock();
    try {
      auto conn = std::make_unique<pqxx::connection>(conninfo_);
      pqxx::nontransaction setup(*conn);
      // NOTICEs (e.g. "relation already exists, skipping") would go to stderr otherwise.
      setup.exec("SET client_min_messages TO warning");
      setup.exec("SET statement_timeout TO " + std::to_string(std::max(0, options_.statement_timeout_ms)));
      setup.commit();
      return Lease{std::move(conn), true};
    } catch (const std::exception& e) {
      {
        std::lock_guard relock(mu_);
        --open_;
      }
      cv_.notify_one();
      return classify(e).error;
    }
  }

  void give_back(std::unique_ptr<pqxx::connection> conn) {
    {
      std::lock_guard lock(mu_);
      idle_.push_back(std::move(conn));
    }
    cv_.notify_one();
  }

  // The leased connection is broken. The idle ones most likely are too (the server restarted or
  // went away), so they are closed now rather than failing one call each later.
  void discard(std::unique_ptr<pqxx::connection> conn) {
    std::vector<std::unique_ptr<pqxx::connection>> stale;
    {
      std::lock_guard lock(mu_);
      stale.swap(idle_);
      open_ -= 1 + static_cast<int>(stale.size());
    }
    cv_.notify_all();
    conn.reset();
    stale.clear();
  }

 private:
  const std::string conninfo_;
  const PostgresOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;
  int open_ = 0;  // idle + leased
};

// --- statements shared by the transaction object and the store's one-shot operations. They throw
// pqxx exceptions; Impl::run() turns those into Errors.

void insert_outbox(pqxx::transaction_base& t, const OutboxMessage& m, Timestamp now) {
  t.exec_params("INSERT INTO outbox (topic, key, headers, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
                m.topic, m.key, headers_to_json(m.headers), pqxx::binarystring(m.payload), to_ms(now));
}

// Returns whether any delivery was queued.
bool queue_webhook(pqxx::transaction_base& t, const WebhookEvent& e, Timestamp now) {
  return t.exec_params(
      "INSERT INTO webhook_deliveries (id, endpoint_id, tenant_id, event_type, event_id, payload, status,"
      " attempt_count, attempts, next_attempt_at, created_at, updated_at)"
      " SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), id, tenant_id, $2, $3, $4, 'pending', 0, '[]',"
      " $5, $5, $5 FROM webhook_endpoints WHERE tenant_id = $1 AND enabled AND strpos(events, $6) > 0"
      " ON CONFLICT (endpoint_id, event_id) DO NOTHING",
      e.tenant_id, e.type, e.event_id, e.payload, to_ms(now), " " + e.type + " ").affected_rows() > 0;
}

void advisory_lock(pqxx::transaction_base& t, int space, const std::string& a, const std::string& b) {
  t.exec_params("SELECT pg_advisory_xact_lock($1::int4, hashtext($2))", space, a + '\x1f' + b);
}

std::vector<StepRecord> select_steps(pqxx::transaction_base& t, const std::string& image_id) {
  auto r = t.exec_params(std::string("SELECT ") + kStepColumns + " FROM steps WHERE image_id = $1 ORDER BY model, step",
                         image_id);
  std::vector<StepRecord> out;
  out.reserve(r.size());
  for (const auto& row : r) out.push_back(read_step(row));
  return out;
}

class PgTx final : public MetadataTx {
 public:
  PgTx(pqxx::work& w, Timestamp now) : w_(w), now_(now) {}

  // The exception of the first statement that failed; the transaction is aborted from then on.
  std::exception_ptr failure() const { return failure_; }

  Result<bool> is_processed(const std::string& group, const std::string& event_id) override {
    return guarded([&]() -> Result<bool> {
      // Two workers handling the same (redelivered) event queue here; the second then sees the
      // first one's marker (READ COMMITTED: the next statement takes a fresh snapshot).
      advisory_lock(w_, kLockProcessedEvent, group, event_id);
      auto r = w_.exec_params("SELECT 1 FROM processed_events WHERE consumer_group = $1 AND event_id = $2", group,
                              event_id);
      return !r.empty();
    });
  }

  Status mark_processed(const std::string& group, const std::string& event_id) override {
    return guarded([&]() -> Status {
      w_.exec_params(
          "INSERT INTO processed_events (consumer_group, event_id, processed_at) VALUES ($1, $2, $3)"
          " ON CONFLICT DO NOTHING",
          group, event_id, to_ms(now_));
      return {};
    });
  }

  Result<ImageRecord> get_image(const std::string& image_id) override {
    return guarded([&]() -> Result<ImageRecord> {
      auto r = w_.exec_params(std::string("SELECT ") + kImageColumns + " FROM images WHERE image_id = $1 FOR UPDATE",
                              image_id);
      if (r.empty()) return not_found("image", image_id);
      locked_.insert(image_id);
      return read_image(r[0]);
    });
  }

  Status set_image_status(const std::string& image_id, ImageStatus status, const std::string& code,
                          const std::string& message) override {
    return guarded([&]() -> Status {
      lock_image(image_id);
      w_.exec_params(
          "UPDATE images SET status = $1, error_code = $2, error_message = $3, updated_at = $4 WHERE image_id = $5",
          image_status_name(status), opt(code), opt(message), to_ms(now_), image_id);
      return {};
    });
  }

  Status set_duplicate_of(const std::string& image_id, const DuplicateOf& d) override {
    return guarded([&]() -> Status {
      lock_image(image_id);
      w_.exec_params("UPDATE images SET duplicate_of = $1, duplicate_score = $2, duplicate_model = $3, updated_at = $4"
                     " WHERE image_id = $5",
                     d.image_id, d.score, d.model, to_ms(now_), image_id);
      return {};
    });
  }

  Status set_thumbnail(const std::string& image_id, const std::string& path) override {
    return guarded([&]() -> Status {
      lock_image(image_id);
      w_.exec_params("UPDATE images SET thumbnail_path = $1, updated_at = $2 WHERE image_id = $3", path, to_ms(now_),
                     image_id);
      return {};
    });
  }

  Result<bool> claim_completion(const std::string& image_id, Timestamp searchable_after) override {
    return guarded([&]() -> Result<bool> {
      lock_image(image_id);
      auto r = w_.exec_params(
          "UPDATE images SET completion_claimed = TRUE, status = 'completed', searchable_after = $1,"
          " error_code = NULL, error_message = NULL, updated_at = $2"
          " WHERE image_id = $3 AND NOT completion_claimed",
          to_ms(searchable_after), to_ms(now_), image_id);
      return r.affected_rows() == 1;
    });
  }

  Result<std::vector<StepRecord>> get_steps(const std::string& image_id) override {
    return guarded([&]() -> Result<std::vector<StepRecord>> {
      lock_image(image_id);
      return select_steps(w_, image_id);
    });
  }

  Status upsert_step(const StepRecord& s) override {
    return guarded([&]() -> Status {
      lock_image(s.image_id);
      const std::string started = opt_ms(s.started_at);
      const std::string completed = opt_ms(s.completed_at);
      const std::string duration = opt_int(s.duration_ms);
      w_.exec_params(
          "INSERT INTO steps (image_id, model, step, status, attempts, started_at, completed_at,"
          " duration_ms, last_error, collection_name) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
          " ON CONFLICT (image_id, model, step) DO UPDATE SET status = excluded.status,"
          " attempts = excluded.attempts, started_at = excluded.started_at,"
          " completed_at = excluded.completed_at, duration_ms = excluded.duration_ms,"
          " last_error = excluded.last_error, collection_name = excluded.collection_name",
          s.image_id, s.model, s.step, step_status_name(s.status), s.attempts, opt(started), opt(completed),
          opt(duration), opt(s.last_error), opt(s.collection_name));
      return {};
    });
  }

  Status enqueue(const OutboxMessage& m) override {
    return guarded([&]() -> Status {
      insert_outbox(w_, m, now_);
      return {};
    });
  }

  Status add_dead_letter(const DeadLetter& d) override {
    return guarded([&]() -> Status {
      w_.exec_params(
          "INSERT INTO dead_letters (topic, key, payload, stage, error_code, error_message, image_id,"
          " tenant_id, attempts, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
          d.topic, pqxx::binarystring(d.key), pqxx::binarystring(d.payload), d.stage, d.error_code, d.error_message,
          opt(d.image_id), opt(d.tenant_id), d.attempts, to_ms(now_));
      return {};
    });
  }

  Status queue_webhook(const WebhookEvent& e) override {
    return guarded([&]() -> Status {
      queued_webhooks_ = deeplens::queue_webhook(w_, e, now_) || queued_webhooks_;
      return {};
    });
  }
  bool queued_webhooks() const { return queued_webhooks_; }

  Status schedule_retry(Timestamp due_at, const OutboxMessage& m) override {
    return guarded([&]() -> Status {
      w_.exec_params("INSERT INTO scheduled_retries (due_at, topic, key, headers, payload) VALUES ($1, $2, $3, $4, $5)",
                     to_ms(due_at), m.topic, m.key, headers_to_json(m.headers), pqxx::binarystring(m.payload));
      return {};
    });
  }

 private:
  // Row lock on the image (once per transaction), taken before reading or writing anything of
  // it, so transactions on the same image run one after the other.
  void lock_image(const std::string& image_id) {
    if (locked_.contains(image_id)) return;
    w_.exec_params("SELECT 1 FROM images WHERE image_id = $1 FOR UPDATE", image_id);
    locked_.insert(image_id);
  }

  template <typename F>
  auto guarded(F&& f) -> decltype(f()) {
    if (failure_)
      return Error(ErrorCode::kFailedPrecondition, "an earlier statement of this PostgreSQL transaction failed")
          .with("backend", "postgresql");
    try {
      return f();
    } catch (const std::exception& e) {
      failure_ = std::current_exception();
      return classify(e).error;
    }
  }

  pqxx::work& w_;
  Timestamp now_;
  std::set<std::string> locked_;
  std::exception_ptr failure_;
  bool queued_webhooks_ = false;
};

}  // namespace

struct PostgresMetadataStore::Impl {
  Impl(const std::string& url, const Clock& c, const PostgresOptions& o)
      : clock(c), options(o), pool(with_connect_timeout(url, o.connect_timeout_s), o) {}

  // Runs body in one READ COMMITTED transaction on a pooled connection and commits when it
  // returns OK. Re-runs it on serialization failure/deadlock, and once on a fresh connection when
  // a pooled one turned out broken (stale after a server restart).
  Status run(const std::function<Status(pqxx::work&)>& body) {
    int conflicts = 0;
    bool reconnected = false;
    while (true) {
      auto lease = pool.acquire();
      if (!lease) return std::move(lease).error();
      std::optional<Failure> failure;
      Status result;
      try {
        pqxx::work w(*lease->conn);
        result = body(w);
        if (result) w.commit();
      } catch (const std::exception& e) {
        failure = classify(e);
      }
      if (!failure) {
        pool.give_back(std::move(lease->conn));
        return result;
      }
      const bool broken = failure->kind == FailureKind::kBroken || failure->kind == FailureKind::kInDoubt ||
                          !lease->conn->is_open();
      if (broken) pool.discard(std::move(lease->conn));
      else pool.give_back(std::move(lease->conn));

      if (failure->kind == FailureKind::kConflict && ++conflicts < options.max_attempts) {
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min(50, 1 << std::min(conflicts, 6))));
        continue;
      }
      if (failure->kind == FailureKind::kConflict)
        return std::move(failure->error).with("attempts", std::to_string(conflicts));
      if (failure->kind == FailureKind::kBroken && !lease->fresh && !reconnected) {
        reconnected = true;
        continue;
      }
      return std::move(failure->error);
    }
  }

  Status migrate() {
    return run([&](pqxx::work& w) -> Status {
      w.exec("SELECT pg_advisory_xact_lock(" + std::to_string(kMigrationLockKey) + ")");
      w.exec(
          "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL,"
          " applied_at BIGINT NOT NULL, PRIMARY KEY (component, version))");
      auto r = w.exec_params("SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = $1",
                             kComponent);
      const int64_t current = int64(r[0][0]);
      for (const auto& m : kMigrations) {
        if (m.version <= current) continue;
        w.exec(m.sql);
        w.exec_params("INSERT INTO schema_migrations (component, version, applied_at) VALUES ($1, $2, $3)",
                      kComponent, m.version, to_ms(clock.now()));
      }
      return {};
    });
  }

  const Clock& clock;
  const PostgresOptions options;
  ConnectionPool pool;
  std::shared_ptr<DeliveryListener> queued = std::make_shared<DeliveryListener>();
};

Result<std::unique_ptr<PostgresMetadataStore>> PostgresMetadataStore::open(const std::string& url,
                                                                           const Clock& clock,
                                                                           PostgresOptions options) {
  if (options.pool_size < 1)
    return Error(ErrorCode::kInvalidArgument, "PostgreSQL pool size must be at least 1")
        .with("pool_size", std::to_string(options.pool_size));
  options.max_attempts = std::max(1, options.max_attempts);
  auto impl = std::make_unique<Impl>(url, clock, options);
  if (auto st = impl->migrate(); !st) return std::move(st).error().with("component", kComponent);
  return std::unique_ptr<PostgresMetadataStore>(new PostgresMetadataStore(std::move(impl)));
}

Result<PostgresMetadataStore::SchemaState> PostgresMetadataStore::schema_state(const std::string& url) {
  SchemaState state;
  for (const auto& m : kMigrations) state.latest = std::max<int64_t>(state.latest, m.version);
  try {
    pqxx::connection c(url);
    pqxx::read_transaction w(c);
    auto exists = w.exec("SELECT to_regclass('schema_migrations') IS NOT NULL");
    if (exists[0][0].as<bool>()) {
      auto r = w.exec_params("SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = $1", kComponent);
      state.applied = r[0][0].as<int64_t>();
    }
  } catch (const std::exception& e) {
    return Error(ErrorCode::kUnavailable, "PostgreSQL not reachable: " + one_line(e.what()));
  }
  return state;
}

PostgresMetadataStore::PostgresMetadataStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PostgresMetadataStore::~PostgresMetadataStore() = default;

Status PostgresMetadataStore::transact(const std::function<Status(MetadataTx&)>& fn) {
  bool queued = false;
  Status result = impl_->run([&](pqxx::work& w) -> Status {
    PgTx tx(w, impl_->clock.now());
    Status st = fn(tx);
    // A statement failed inside fn: classify the original exception (conflicts are retried) even
    // if fn swallowed the error.
    if (auto failure = tx.failure()) std::rethrow_exception(failure);
    queued = tx.queued_webhooks();
    return st;
  });
  if (result && queued) impl_->queued->fire();
  return result;
}

Status PostgresMetadataStore::create_tenant(const Tenant& t) {
  return impl_->run([&](pqxx::work& w) -> Status {
    const TenantLimits& l = t.limits;
    auto r = w.exec_params(
        "INSERT INTO tenants (id, created_at, max_images, max_bytes, upload_rate, search_rate)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        t.id, to_ms(t.created_at), l.max_images, l.max_bytes, l.upload_rate, l.search_rate);
    if (r.affected_rows() == 0) return Error(ErrorCode::kAlreadyExists, "tenant already exists").with("tenant", t.id);
    return {};
  });
}

Result<Tenant> PostgresMetadataStore::get_tenant(const std::string& id) {
  Tenant t;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec_params(std::string("SELECT ") + kTenantColumns + " FROM tenants WHERE id = $1", id);
    if (r.empty()) return not_found("tenant", id);
    t = read_tenant(r[0]);
    return {};
  });
  if (!st) return std::move(st).error();
  return t;
}

Result<std::vector<Tenant>> PostgresMetadataStore::list_tenants() {
  std::vector<Tenant> out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out.clear();
    for (const auto& row : w.exec(std::string("SELECT ") + kTenantColumns + " FROM tenants ORDER BY id"))
      out.push_back(read_tenant(row));
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Status PostgresMetadataStore::set_tenant_limits(const std::string& id, const TenantLimits& l) {
  return impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec_params(
        "UPDATE tenants SET max_images = $1, max_bytes = $2, upload_rate = $3, search_rate = $4 WHERE id = $5",
        l.max_images, l.max_bytes, l.upload_rate, l.search_rate, id);
    if (r.affected_rows() == 0) return not_found("tenant", id);
    return {};
  });
}

Status PostgresMetadataStore::add_api_key(const ApiKey& key, const std::string& key_sha256) {
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    // No conflict target: a stored hash (or id) leaves the stored key as it is, as INSERT OR IGNORE
    // does on SQLite.
    w.exec_params(
        "INSERT INTO api_keys (key_sha256, tenant_id, created_at, id, name, prefix, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        key_sha256, key.tenant_id, to_ms(key.created_at), key.id, key.name, key.prefix,
        opt_ms_value(key.expires_at));
    return {};
  });
  if (!st && st.error().code == ErrorCode::kNotFound)
    return Error(ErrorCode::kNotFound, "tenant not found; create it before adding keys").with("tenant", key.tenant_id);
  return st;
}

Result<ApiKey> PostgresMetadataStore::find_api_key(const std::string& key_sha256) {
  ApiKey key;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec_params(std::string("SELECT ") + kApiKeyColumns + ", key_sha256 FROM api_keys WHERE key_sha256 = $1",
                           key_sha256);
    // The lookup is by hash; comparing the hashes again in constant time costs nothing.
    if (r.empty() || !constant_time_equal(text(r[0][8]), key_sha256))
      return Error(ErrorCode::kNotFound, "unknown API key");
    key = read_api_key(r[0]);
    return {};
  });
  if (!st) return std::move(st).error();
  return key;
}

Result<std::vector<ApiKey>> PostgresMetadataStore::list_api_keys(const std::string& tenant_id) {
  std::vector<ApiKey> out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out.clear();
    for (const auto& row : w.exec_params(std::string("SELECT ") + kApiKeyColumns +
                                             " FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id",
                                         tenant_id))
      out.push_back(read_api_key(row));
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Status PostgresMetadataStore::revoke_api_key(const std::string& tenant_id, const std::string& key_id, Timestamp at) {
  return impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec_params("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE tenant_id = $2 AND id = $3",
                           to_ms(at), tenant_id, key_id);
    if (r.affected_rows() == 0) return not_found("API key", key_id);
    return {};
  });
}

Status PostgresMetadataStore::touch_api_key(const std::string& key_id, Timestamp at) {
  return impl_->run([&](pqxx::work& w) -> Status {
    w.exec_params("UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
                  to_ms(at), key_id);
    return {};
  });
}

Result<double> PostgresMetadataStore::take_rate_token(const std::string& bucket, double rate, double burst,
                                                      Timestamp now) {
  double wait = 0;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    const int64_t now_ms = to_ms(now);
    // A new bucket starts full; concurrent first takers wait on the insert and then find the row.
    w.exec_params("INSERT INTO rate_buckets (bucket, tokens, updated_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                  bucket, burst, now_ms);
    auto r = w.exec_params("SELECT tokens, updated_ms FROM rate_buckets WHERE bucket = $1 FOR UPDATE", bucket);
    if (r.empty()) return Error(ErrorCode::kInternal, "rate bucket vanished while taking a token").with("bucket", bucket);
    RateBucket b{r[0][0].as<double>(), int64(r[0][1])};
    wait = b.take(rate, burst, now_ms);
    w.exec_params("UPDATE rate_buckets SET tokens = $1, updated_ms = $2 WHERE bucket = $3", b.tokens, b.updated_ms,
                  bucket);
    return {};
  });
  if (!st) return std::move(st).error();
  return wait;
}

Result<CreateImageOutcome> PostgresMetadataStore::create_image(
    const ImageRecord& image, bool skip_duplicate_check,
    const std::function<OutboxMessage(const ImageRecord&)>& make_event, const StorageQuota& quota) {
  CreateImageOutcome out;
  bool queued = false;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out = CreateImageOutcome{};
    queued = false;
    // Concurrent uploads with the same key or bytes queue here, so the second one finds the first.
    if (!image.idempotency_key.empty()) advisory_lock(w, kLockIdempotencyKey, image.tenant_id, image.idempotency_key);
    if (!skip_duplicate_check) advisory_lock(w, kLockSha256, image.tenant_id, image.sha256);
    auto find_one = [&](const char* where, const std::string& a, const std::string& b) {
      auto r = w.exec_params(std::string("SELECT ") + kImageColumns + " FROM images WHERE " + where +
                                 " ORDER BY created_at LIMIT 1",
                             a, b);
      if (!r.empty()) out.image = read_image(r[0]);
      return !r.empty();
    };
    if (!image.idempotency_key.empty() &&
        find_one("tenant_id = $1 AND idempotency_key = $2", image.tenant_id, image.idempotency_key)) {
      out.kind = CreateImageOutcome::Kind::kIdempotentReplay;
      return {};
    }
    if (!skip_duplicate_check && find_one("tenant_id = $1 AND sha256 = $2", image.tenant_id, image.sha256)) {
      out.kind = CreateImageOutcome::Kind::kDuplicate;
      return {};
    }
    // The tenant's row lock makes the quota check and the increment one step for concurrent
    // uploads. Images of a tenant that has no row (never created) have no usage to keep.
    auto usage = w.exec_params("SELECT image_count, bytes_stored FROM tenants WHERE id = $1 FOR UPDATE", image.tenant_id);
    if (!usage.empty()) {
      // An error return rolls the transaction back: nothing is written.
      if (auto st = check_quota(image, quota, int64(usage[0][0]), int64(usage[0][1])); !st) return st;
      w.exec_params("UPDATE tenants SET image_count = image_count + 1, bytes_stored = bytes_stored + $1 WHERE id = $2",
                    image.file_size, image.tenant_id);
    }
    w.exec_params(
        "INSERT INTO images (image_id, tenant_id, file_name, storage_path, file_size, content_type,"
        " sha256, width, height, format, color_profile, uploaded_by, processing_options, models,"
        " status, idempotency_key, thumbnail_path, correlation_id, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        image.image_id, image.tenant_id, image.file_name, image.storage_path, image.file_size, image.content_type,
        image.sha256, image.width, image.height, image.format, image.color_profile, image.uploaded_by,
        image.processing_options_json, nlohmann::json(image.models).dump(), image_status_name(image.status),
        opt(image.idempotency_key), opt(image.thumbnail_path), image.correlation_id, to_ms(image.created_at),
        to_ms(image.updated_at));
    out.image = image;
    out.kind = CreateImageOutcome::Kind::kCreated;
    const OutboxMessage event = make_event(image);
    insert_outbox(w, event, impl_->clock.now());
    queued = queue_webhook(w, WebhookEvent{image.tenant_id, "image.uploaded", image.correlation_id, event.payload},
                           impl_->clock.now());
    return {};
  });
  if (!st) {
    if (st.error().code == ErrorCode::kAlreadyExists)
      return Error(ErrorCode::kAlreadyExists, "image already exists").with("imageId", image.image_id);
    return std::move(st).error();
  }
  if (queued) impl_->queued->fire();
  return out;
}

Result<ImageRecord> PostgresMetadataStore::get_image(const std::string& tenant_id, const std::string& image_id) {
  ImageRecord out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec_params(std::string("SELECT ") + kImageColumns + " FROM images WHERE image_id = $1 AND tenant_id = $2",
                           image_id, tenant_id);
    if (r.empty()) return not_found("image", image_id);
    out = read_image(r[0]);
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<std::vector<ImageRecord>> PostgresMetadataStore::get_images(const std::string& tenant_id,
                                                                   const std::vector<std::string>& image_ids) {
  std::vector<ImageRecord> out;
  constexpr size_t kChunk = 1000;
  for (size_t from = 0; from < image_ids.size(); from += kChunk) {
    const std::string array =
        text_array(image_ids.begin() + static_cast<std::ptrdiff_t>(from),
                   image_ids.begin() + static_cast<std::ptrdiff_t>(std::min(image_ids.size(), from + kChunk)));
    std::vector<ImageRecord> found;
    auto st = impl_->run([&](pqxx::work& w) -> Status {
      found.clear();  // run() may retry
      for (const auto& row : w.exec_params(std::string("SELECT ") + kImageColumns +
                                               " FROM images WHERE image_id = ANY($1::text[]) AND tenant_id = $2",
                                           array, tenant_id))
        found.push_back(read_image(row));
      return {};
    });
    if (!st) return std::move(st).error();
    out.insert(out.end(), std::make_move_iterator(found.begin()), std::make_move_iterator(found.end()));
  }
  return out;
}

Result<std::vector<StepRecord>> PostgresMetadataStore::get_steps(const std::string& image_id) {
  std::vector<StepRecord> out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out = select_steps(w, image_id);
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<ImagePage> PostgresMetadataStore::list_images(const std::string& tenant_id, std::optional<ImageStatus> status,
                                                     int limit, const std::string& cursor, bool duplicates_only) {
  std::optional<int64_t> cursor_ms;
  std::string cursor_id;
  if (!cursor.empty()) {
    const auto sep = cursor.find('_');
    if (sep == std::string::npos) return Error(ErrorCode::kInvalidArgument, "malformed cursor").with("cursor", cursor);
    try {
      cursor_ms = std::stoll(cursor.substr(0, sep));
    } catch (...) {
      return Error(ErrorCode::kInvalidArgument, "malformed cursor").with("cursor", cursor);
    }
    cursor_id = cursor.substr(sep + 1);
  }
  if (limit < 0) limit = 0;
  ImagePage page;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    page = ImagePage{};
    // $2/$3 are always bound; the keyset condition only applies with a cursor.
    std::string sql = std::string("SELECT ") + kImageColumns + " FROM images WHERE tenant_id = $1";
    sql += cursor_ms ? " AND (created_at, image_id) < ($2::bigint, $3::text)" : " AND $2::bigint IS NULL AND $3::text IS NULL";
    sql += status ? " AND status = $5" : " AND $5::text IS NULL";
    if (duplicates_only) sql += " AND duplicate_of IS NOT NULL";
    sql += " ORDER BY created_at DESC, image_id DESC LIMIT $4";
    const std::string ms = opt_int(cursor_ms);
    auto r = w.exec_params(sql, tenant_id, opt(ms), opt(cursor_id), static_cast<int64_t>(limit) + 1,
                           status ? image_status_name(*status) : static_cast<const char*>(nullptr));
    for (const auto& row : r) page.images.push_back(read_image(row));
    return {};
  });
  if (!st) return std::move(st).error();
  if (static_cast<int>(page.images.size()) > limit) {
    page.images.resize(static_cast<size_t>(limit));
    if (!page.images.empty()) {
      const auto& last = page.images.back();
      page.next_cursor = std::to_string(to_ms(last.created_at)) + "_" + last.image_id;
    }
  }
  return page;
}

Result<std::vector<std::string>> PostgresMetadataStore::existing_images(const std::vector<std::string>& image_ids) {
  std::vector<std::string> out;
  constexpr size_t kChunk = 1000;
  for (size_t from = 0; from < image_ids.size(); from += kChunk) {
    const std::string array =
        text_array(image_ids.begin() + static_cast<std::ptrdiff_t>(from),
                   image_ids.begin() + static_cast<std::ptrdiff_t>(std::min(image_ids.size(), from + kChunk)));
    std::vector<std::string> found;
    auto st = impl_->run([&](pqxx::work& w) -> Status {
      found.clear();  // run() may retry
      for (const auto& row : w.exec_params("SELECT image_id FROM images WHERE image_id = ANY($1::text[])", array))
        found.push_back(text(row[0]));
      return {};
    });
    if (!st) return std::move(st).error();
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

Status PostgresMetadataStore::delete_image(const std::string& tenant_id, const std::string& image_id,
                                           const WebhookEvent* deleted) {
  bool queued = false;
  Status st = impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec_params("DELETE FROM images WHERE image_id = $1 AND tenant_id = $2 RETURNING file_size", image_id,
                           tenant_id);
    if (r.empty()) return not_found("image", image_id);
    w.exec_params("UPDATE tenants SET image_count = image_count - 1, bytes_stored = bytes_stored - $1 WHERE id = $2",
                  int64(r[0][0]), tenant_id);
    w.exec_params("DELETE FROM steps WHERE image_id = $1", image_id);
    queued = deleted && queue_webhook(w, *deleted, impl_->clock.now());
    return {};
  });
  if (st && queued) impl_->queued->fire();
  return st;
}

Result<std::vector<std::pair<std::string, int64_t>>> PostgresMetadataStore::count_by_status() {
  std::vector<std::pair<std::string, int64_t>> out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out.clear();
    for (const auto& row : w.exec("SELECT status, COUNT(*) FROM images GROUP BY status ORDER BY status"))
      out.emplace_back(text(row[0]), int64(row[1]));
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<std::vector<StepActivity>> PostgresMetadataStore::step_activity(Timestamp since) {
  std::vector<StepActivity> out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out.clear();
    auto rows = w.exec_params(
        "SELECT step, SUM(running)::bigint, SUM(completed)::bigint FROM ("
        " SELECT step, COUNT(*) AS running, 0 AS completed FROM steps WHERE status = 'running' GROUP BY step"
        " UNION ALL SELECT step, 0, COUNT(*) FROM steps WHERE status = 'completed' AND completed_at >= $1 GROUP BY step) a"
        " GROUP BY step ORDER BY step",
        to_ms(since));
    for (const auto& row : rows) out.push_back(StepActivity{text(row[0]), int64(row[1]), int64(row[2])});
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<std::optional<double>> PostgresMetadataStore::recent_step_duration_ms(const std::string& step, int window) {
  std::optional<double> out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec_params(
        "SELECT AVG(duration_ms)::float8 FROM (SELECT duration_ms FROM steps WHERE step = $1 AND status = 'completed'"
        " AND duration_ms IS NOT NULL ORDER BY completed_at DESC LIMIT $2) recent",
        step, static_cast<int64_t>(std::max(0, window)));
    out.reset();
    if (!r.empty() && !r[0][0].is_null()) out = r[0][0].as<double>();
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<ExtractionBacklog> PostgresMetadataStore::extraction_backlog(const ImageRecord& image, Timestamp since) {
  ExtractionBacklog out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out = {};
    auto rows = w.exec_params(
        "SELECT COALESCE(processing_options::json->>'priority', 'normal'), COUNT(*),"
        " SUM(CASE WHEN created_at < $1 OR (created_at = $1 AND image_id < $2) THEN 1 ELSE 0 END)"
        " FROM images WHERE status IN ('uploaded', 'processing') GROUP BY 1",
        to_ms(image.created_at), image.image_id);
    for (const auto& row : rows) {
      const Priority lane = parse_priority(text(row[0])).value_or(Priority::kNormal);
      out.waiting[static_cast<size_t>(lane)] += int64(row[1]);
      out.ahead[static_cast<size_t>(lane)] += int64(row[2]);
    }
    auto r = w.exec_params("SELECT COUNT(*), MIN(completed_at) FROM steps WHERE step = 'vector_indexing'"
                           " AND status = 'completed' AND completed_at >= $1",
                           to_ms(since));
    if (!r.empty()) {
      out.recent_completions = int64(r[0][0]);
      if (!r[0][1].is_null()) out.first_completion = Timestamp(std::chrono::milliseconds(int64(r[0][1])));
    }
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<std::vector<OutboxRow>> PostgresMetadataStore::pending_outbox(const std::string& relay_id, int limit,
                                                                     std::chrono::milliseconds lease) {
  std::vector<OutboxRow> out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out.clear();
    const int64_t now = to_ms(impl_->clock.now());
    // FOR UPDATE (no SKIP LOCKED): a relay claiming at the same moment makes this one wait and then
    // see its claim, so two relays never take interleaved rows.
    auto r = w.exec_params(
        "SELECT seq, topic, key, headers, payload, claimed_by, claimed_until FROM outbox WHERE sent_at IS NULL"
        " ORDER BY seq LIMIT $1 FOR UPDATE",
        static_cast<int64_t>(std::max(0, limit)));
    std::string seqs = "{";
    for (const auto& row : r) {
      const bool held_by_other = !row[6].is_null() && int64(row[6]) >= now && text(row[5]) != relay_id;
      if (held_by_other) break;  // never publish past another relay's rows
      out.push_back(OutboxRow{int64(row[0]), OutboxMessage{text(row[1]), text(row[2]), bytes(row[4]),
                                                           headers_from_json(text(row[3]))}});
      seqs += (out.size() > 1 ? "," : "") + std::to_string(out.back().seq);
    }
    seqs += "}";
    if (!out.empty())
      w.exec_params("UPDATE outbox SET claimed_by = $1, claimed_until = $2 WHERE seq = ANY($3::bigint[])", relay_id,
                    now + static_cast<int64_t>(lease.count()), seqs);
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Status PostgresMetadataStore::mark_outbox_sent(const std::vector<int64_t>& seqs) {
  if (seqs.empty()) return {};
  std::string array = "{";
  for (size_t i = 0; i < seqs.size(); ++i) array += (i ? "," : "") + std::to_string(seqs[i]);
  array += "}";
  // Sent rows are deleted rather than kept: the bus holds the history from here on.
  return impl_->run([&](pqxx::work& w) -> Status {
    w.exec_params("DELETE FROM outbox WHERE seq = ANY($1::bigint[])", array);
    return {};
  });
}

Result<int64_t> PostgresMetadataStore::outbox_backlog() {
  int64_t n = 0;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    n = int64(w.exec("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")[0][0]);
    return {};
  });
  if (!st) return std::move(st).error();
  return n;
}

Result<int> PostgresMetadataStore::release_due_retries(Timestamp now, int limit) {
  int moved = 0;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    // SKIP LOCKED: several retry stages may release at once; each row moves exactly once.
    auto r = w.exec_params(
        "DELETE FROM scheduled_retries WHERE id IN (SELECT id FROM scheduled_retries WHERE due_at <= $1"
        " ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)"
        " RETURNING id, due_at, topic, key, headers, payload",
        to_ms(now), static_cast<int64_t>(std::max(0, limit)));
    std::vector<std::pair<std::pair<int64_t, int64_t>, OutboxMessage>> due;
    for (const auto& row : r)
      due.emplace_back(std::make_pair(int64(row[1]), int64(row[0])),
                       OutboxMessage{text(row[2]), text(row[3]), bytes(row[5]), headers_from_json(text(row[4]))});
    std::sort(due.begin(), due.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [order, message] : due) insert_outbox(w, message, now);
    moved = static_cast<int>(due.size());
    return {};
  });
  if (!st) return std::move(st).error();
  return moved;
}

Result<std::optional<Timestamp>> PostgresMetadataStore::next_retry_due() {
  std::optional<Timestamp> out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec("SELECT MIN(due_at) FROM scheduled_retries");
    out.reset();
    if (!r.empty() && !r[0][0].is_null()) out = from_ms(int64(r[0][0]));
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<std::vector<DeadLetter>> PostgresMetadataStore::list_dead_letters(bool include_replayed, int limit,
                                                                       const std::string& tenant_id) {
  std::vector<DeadLetter> out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out.clear();
    std::string sql = std::string("SELECT ") + kDeadLetterColumns + " FROM dead_letters WHERE ($2 = '' OR tenant_id = $2)";
    if (!include_replayed) sql += " AND replayed_at IS NULL";
    sql += " ORDER BY id LIMIT $1";
    for (const auto& row : w.exec_params(sql, static_cast<int64_t>(std::max(0, limit)), tenant_id))
      out.push_back(read_dead_letter(row));
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<std::vector<ScheduledRetry>> PostgresMetadataStore::list_scheduled_retries(int limit) {
  std::vector<ScheduledRetry> out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out.clear();
    for (const auto& row : w.exec_params("SELECT id, due_at, topic, key, headers, payload FROM scheduled_retries"
                                         " ORDER BY due_at, id LIMIT $1",
                                         static_cast<int64_t>(std::max(0, limit))))
      out.push_back(ScheduledRetry{int64(row[0]), from_ms(int64(row[1])),
                                   OutboxMessage{text(row[2]), text(row[3]), bytes(row[5]), headers_from_json(text(row[4]))}});
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<DeadLetter> PostgresMetadataStore::get_dead_letter(int64_t id) {
  DeadLetter out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec_params(std::string("SELECT ") + kDeadLetterColumns + " FROM dead_letters WHERE id = $1", id);
    if (r.empty()) return not_found("dead letter", std::to_string(id));
    out = read_dead_letter(r[0]);
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Status PostgresMetadataStore::replay_dead_letter(int64_t id, const OutboxMessage& message) {
  return impl_->run([&](pqxx::work& w) -> Status {
    const int64_t now = to_ms(impl_->clock.now());
    // A concurrent replay of the same letter waits on its row and then finds it replayed.
    auto r = w.exec_params(
        "UPDATE dead_letters SET replayed_at = $1 WHERE id = $2 AND replayed_at IS NULL RETURNING image_id", now, id);
    if (r.empty())
      return Error(ErrorCode::kFailedPrecondition, "dead letter does not exist or was already replayed")
          .with("id", std::to_string(id));
    // The image is being processed again (unless it completed meanwhile).
    if (!r[0][0].is_null())
      w.exec_params(
          "UPDATE images SET status = 'processing', error_code = NULL, error_message = NULL, updated_at = $1"
          " WHERE image_id = $2 AND NOT completion_claimed",
          now, text(r[0][0]));
    insert_outbox(w, message, impl_->clock.now());
    return {};
  });
}

Status PostgresMetadataStore::trim_processed(Timestamp before) {
  return impl_->run([&](pqxx::work& w) -> Status {
    w.exec_params("DELETE FROM processed_events WHERE processed_at < $1", to_ms(before));
    return {};
  });
}

Status PostgresMetadataStore::ping() {
  return impl_->run([](pqxx::work& w) -> Status {
    w.exec("SELECT 1");
    return {};
  });
}

// ------------------------------------------------------------------------------------------------
// WebhookStore

namespace {

constexpr const char* kEndpointColumns =
    "e.id, e.tenant_id, e.url, e.events, e.description, e.enabled, e.disabled_reason, e.secret,"
    " e.previous_secret, e.previous_secret_until, e.failing_since, e.created_at, e.updated_at";
constexpr int kDeliveryColumnCount = 12;  // where the joined endpoint columns start

WebhookEndpoint read_endpoint(const pqxx::row& r, int at = 0) {
  WebhookEndpoint e;
  e.id = text(r[at + 0]);
  e.tenant_id = text(r[at + 1]);
  e.url = text(r[at + 2]);
  e.events = webhook_events_from_column(text(r[at + 3]));
  e.description = text(r[at + 4]);
  e.enabled = r[at + 5].as<bool>();
  e.disabled_reason = text(r[at + 6]);
  e.secret = text(r[at + 7]);
  e.previous_secret = text(r[at + 8]);
  if (!r[at + 9].is_null()) e.previous_secret_until = from_ms(int64(r[at + 9]));
  if (!r[at + 10].is_null()) e.failing_since = from_ms(int64(r[at + 10]));
  e.created_at = from_ms(int64(r[at + 11]));
  e.updated_at = from_ms(int64(r[at + 12]));
  return e;
}

constexpr const char* kDeliveryColumns =
    "d.id, d.endpoint_id, d.tenant_id, d.event_type, d.event_id, d.payload, d.status, d.attempt_count,"
    " d.attempts, d.next_attempt_at, d.created_at, d.updated_at";

WebhookDelivery read_delivery(const pqxx::row& r, int at = 0) {
  WebhookDelivery d;
  d.id = text(r[at + 0]);
  d.endpoint_id = text(r[at + 1]);
  d.tenant_id = text(r[at + 2]);
  d.event_type = text(r[at + 3]);
  d.event_id = text(r[at + 4]);
  d.payload = text(r[at + 5]);
  d.status = parse_delivery_status(text(r[at + 6])).value_or(DeliveryStatus::kPending);
  d.attempt_count = static_cast<int>(int64(r[at + 7]));
  d.attempts = delivery_attempts_from_json(text(r[at + 8]));
  if (!r[at + 9].is_null()) d.next_attempt_at = from_ms(int64(r[at + 9]));
  d.created_at = from_ms(int64(r[at + 10]));
  d.updated_at = from_ms(int64(r[at + 11]));
  return d;
}

Error webhook_not_found(const std::string& what, const std::string& id) {
  return Error(ErrorCode::kNotFound, "no " + what + " '" + id + "' in this tenant").with("id", id);
}

std::optional<int64_t> ms_or_null(const std::optional<Timestamp>& t) { return opt_ms_value(t); }

}  // namespace

void PostgresMetadataStore::on_deliveries_queued(std::function<void()> listener) {
  impl_->queued->set(std::move(listener));
}

Status PostgresMetadataStore::create_webhook(const WebhookEndpoint& e, int max_per_tenant) {
  return impl_->run([&](pqxx::work& w) -> Status {
    // The tenant's row lock makes the count and the insert one step for concurrent creators.
    w.exec_params("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", e.tenant_id);
    const int64_t count = int64(w.exec_params("SELECT COUNT(*) FROM webhook_endpoints WHERE tenant_id = $1",
                                              e.tenant_id)[0][0]);
    if (max_per_tenant > 0 && count >= max_per_tenant)
      return Error(ErrorCode::kResourceExhausted,
                   "this tenant has " + std::to_string(count) + " webhooks, the most allowed (webhooks.max_per_tenant)")
          .with("reason", "webhook_limit")
          .with("limit", std::to_string(max_per_tenant));
    w.exec_params(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, events, description, enabled, disabled_reason, secret,"
        " previous_secret, previous_secret_until, failing_since, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        e.id, e.tenant_id, e.url, webhook_events_column(e.events), e.description, e.enabled, opt(e.disabled_reason),
        e.secret, opt(e.previous_secret), ms_or_null(e.previous_secret_until), ms_or_null(e.failing_since),
        to_ms(e.created_at), to_ms(e.updated_at));
    return {};
  });
}

Result<std::vector<WebhookEndpoint>> PostgresMetadataStore::list_webhooks(const std::string& tenant_id) {
  std::vector<WebhookEndpoint> out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out.clear();
    for (const auto& row : w.exec_params(std::string("SELECT ") + kEndpointColumns +
                                             " FROM webhook_endpoints e WHERE e.tenant_id = $1 ORDER BY e.created_at, e.id",
                                         tenant_id))
      out.push_back(read_endpoint(row));
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<WebhookEndpoint> PostgresMetadataStore::get_webhook(const std::string& tenant_id, const std::string& id) {
  WebhookEndpoint out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec_params(std::string("SELECT ") + kEndpointColumns +
                               " FROM webhook_endpoints e WHERE e.tenant_id = $1 AND e.id = $2",
                           tenant_id, id);
    if (r.empty()) return webhook_not_found("webhook", id);
    out = read_endpoint(r[0]);
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Status PostgresMetadataStore::update_webhook(const WebhookEndpoint& e) {
  return impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec_params(
        "UPDATE webhook_endpoints SET url = $1, events = $2, description = $3, enabled = $4, disabled_reason = $5,"
        " secret = $6, previous_secret = $7, previous_secret_until = $8, failing_since = $9, updated_at = $10"
        " WHERE tenant_id = $11 AND id = $12",
        e.url, webhook_events_column(e.events), e.description, e.enabled, opt(e.disabled_reason), e.secret,
        opt(e.previous_secret), ms_or_null(e.previous_secret_until), ms_or_null(e.failing_since), to_ms(e.updated_at),
        e.tenant_id, e.id);
    if (r.affected_rows() == 0) return webhook_not_found("webhook", e.id);
    return {};
  });
}

Status PostgresMetadataStore::delete_webhook(const std::string& tenant_id, const std::string& id) {
  return impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec_params("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2", tenant_id, id);
    if (r.affected_rows() == 0) return webhook_not_found("webhook", id);
    w.exec_params("DELETE FROM webhook_deliveries WHERE endpoint_id = $1", id);
    return {};
  });
}

Status PostgresMetadataStore::add_delivery(const WebhookDelivery& d) {
  return impl_->run([&](pqxx::work& w) -> Status {
    w.exec_params(
        "INSERT INTO webhook_deliveries (id, endpoint_id, tenant_id, event_type, event_id, payload, status,"
        " attempt_count, attempts, next_attempt_at, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        d.id, d.endpoint_id, d.tenant_id, d.event_type, d.event_id, d.payload, delivery_status_name(d.status),
        d.attempt_count, delivery_attempts_to_json(d.attempts), ms_or_null(d.next_attempt_at), to_ms(d.created_at),
        to_ms(d.updated_at));
    return {};
  });
}

Result<std::vector<ClaimedDelivery>> PostgresMetadataStore::claim_deliveries(const std::string& owner, Timestamp now,
                                                                             std::chrono::milliseconds lease,
                                                                             int limit, int per_endpoint) {
  std::vector<ClaimedDelivery> out;
  const int64_t now_ms = to_ms(now);
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out.clear();
    std::map<std::string, int> busy;  // endpoint -> deliveries under a live lease (any process)
    for (const auto& row : w.exec_params(
             "SELECT endpoint_id, COUNT(*) FROM webhook_deliveries WHERE status = 'pending' AND claimed_until > $1"
             " GROUP BY endpoint_id",
             now_ms))
      busy[text(row[0])] = static_cast<int>(int64(row[1]));
    auto r = w.exec_params(std::string("SELECT ") + kDeliveryColumns + ", " + kEndpointColumns +
                               " FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id"
                               " WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND e.enabled"
                               " AND (d.claimed_until IS NULL OR d.claimed_until <= $1)"
                               " ORDER BY d.next_attempt_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED",
                           now_ms, static_cast<int64_t>(std::max(0, limit)) * 4);
    std::string ids = "{";
    for (const auto& row : r) {
      if (static_cast<int>(out.size()) >= limit) break;
      ClaimedDelivery cd{read_delivery(row), read_endpoint(row, kDeliveryColumnCount)};
      int& n = busy[cd.delivery.endpoint_id];
      if (per_endpoint > 0 && n >= per_endpoint) continue;
      ++n;
      ids += (out.empty() ? "" : ",") + cd.delivery.id;
      out.push_back(std::move(cd));
    }
    ids += "}";
    if (!out.empty())
      w.exec_params("UPDATE webhook_deliveries SET claimed_by = $1, claimed_until = $2 WHERE id = ANY($3::text[])",
                    owner, now_ms + static_cast<int64_t>(lease.count()), ids);
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Status PostgresMetadataStore::record_attempt(const std::string& delivery_id, const AttemptOutcome& o) {
  return impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec_params("SELECT attempts, endpoint_id FROM webhook_deliveries WHERE id = $1 FOR UPDATE",
                           delivery_id);
    if (r.empty()) return {};  // its endpoint was deleted meanwhile
    auto attempts = delivery_attempts_from_json(text(r[0][0]));
    const std::string endpoint = text(r[0][1]);
    attempts.push_back(o.attempt);
    if (attempts.size() > kKeptAttempts) attempts.erase(attempts.begin(), attempts.end() - kKeptAttempts);
    const std::optional<int64_t> next =
        o.status == DeliveryStatus::kPending ? ms_or_null(o.next_attempt_at) : std::nullopt;
    w.exec_params(
        "UPDATE webhook_deliveries SET status = $1, attempt_count = attempt_count + 1, attempts = $2,"
        " next_attempt_at = $3, claimed_by = NULL, claimed_until = NULL, updated_at = $4 WHERE id = $5",
        delivery_status_name(o.status), delivery_attempts_to_json(attempts), next, to_ms(o.attempt.at), delivery_id);
    if (o.status == DeliveryStatus::kSucceeded)
      w.exec_params("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1", endpoint);
    else
      w.exec_params("UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2) WHERE id = $1", endpoint,
                    to_ms(o.attempt.at));
    if (!o.disable_endpoint.empty())
      w.exec_params("UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $1, updated_at = $2 WHERE id = $3",
                    o.disable_endpoint, to_ms(o.attempt.at), endpoint);
    return {};
  });
}

Result<DeliveryPage> PostgresMetadataStore::list_deliveries(const std::string& tenant_id, const std::string& endpoint_id,
                                                            std::optional<DeliveryStatus> status, int limit,
                                                            const std::string& cursor) {
  DeliveryPage out;
  std::pair<int64_t, std::string> after{INT64_MAX, ""};
  const bool paged = !cursor.empty();
  if (paged) {
    auto parsed = parse_delivery_cursor(cursor);
    if (!parsed) return std::move(parsed).error();
    after = *parsed;
  }
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out.deliveries.clear();
    auto r = w.exec_params(std::string("SELECT ") + kDeliveryColumns +
                               " FROM webhook_deliveries d WHERE d.tenant_id = $1 AND d.endpoint_id = $2"
                               " AND ($3::text IS NULL OR d.status = $3)"
                               " AND (NOT $4 OR d.created_at < $5 OR (d.created_at = $5 AND d.id < $6))"
                               " ORDER BY d.created_at DESC, d.id DESC LIMIT $7",
                           tenant_id, endpoint_id, status ? delivery_status_name(*status) : nullptr, paged,
                           after.first, after.second, static_cast<int64_t>(std::max(0, limit)) + 1);
    for (const auto& row : r) out.deliveries.push_back(read_delivery(row));
    return {};
  });
  if (!st) return std::move(st).error();
  if (static_cast<int>(out.deliveries.size()) > limit) {
    out.deliveries.pop_back();
    out.next_cursor = delivery_cursor(out.deliveries.back());
  }
  return out;
}

Result<WebhookDelivery> PostgresMetadataStore::get_delivery(const std::string& tenant_id, const std::string& endpoint_id,
                                                            const std::string& delivery_id) {
  WebhookDelivery out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec_params(std::string("SELECT ") + kDeliveryColumns +
                               " FROM webhook_deliveries d WHERE d.tenant_id = $1 AND d.endpoint_id = $2 AND d.id = $3",
                           tenant_id, endpoint_id, delivery_id);
    if (r.empty()) return webhook_not_found("delivery", delivery_id);
    out = read_delivery(r[0]);
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Status PostgresMetadataStore::redeliver(const std::string& tenant_id, const std::string& endpoint_id,
                                        const std::string& delivery_id, Timestamp now) {
  return impl_->run([&](pqxx::work& w) -> Status {
    auto r = w.exec_params(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, updated_at = $1"
        " WHERE tenant_id = $2 AND endpoint_id = $3 AND id = $4",
        to_ms(now), tenant_id, endpoint_id, delivery_id);
    if (r.affected_rows() == 0) return webhook_not_found("delivery", delivery_id);
    return {};
  });
}

Result<std::vector<std::pair<std::string, int64_t>>> PostgresMetadataStore::pending_deliveries() {
  std::vector<std::pair<std::string, int64_t>> out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out.clear();
    for (const auto& row : w.exec("SELECT endpoint_id, COUNT(*) FROM webhook_deliveries WHERE status = 'pending'"
                                  " GROUP BY endpoint_id ORDER BY endpoint_id"))
      out.emplace_back(text(row[0]), int64(row[1]));
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<std::optional<Timestamp>> PostgresMetadataStore::next_delivery_due() {
  std::optional<Timestamp> out;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    out.reset();
    auto r = w.exec("SELECT MIN(d.next_attempt_at) FROM webhook_deliveries d JOIN webhook_endpoints e"
                    " ON e.id = d.endpoint_id WHERE d.status = 'pending' AND e.enabled");
    if (!r.empty() && !r[0][0].is_null()) out = from_ms(int64(r[0][0]));
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<int64_t> PostgresMetadataStore::trim_deliveries(Timestamp before) {
  int64_t removed = 0;
  auto st = impl_->run([&](pqxx::work& w) -> Status {
    removed = w.exec_params("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND updated_at < $1",
                            to_ms(before))
                  .affected_rows();
    return {};
  });
  if (!st) return std::move(st).error();
  return removed;
}

}  // namespace deeplens
