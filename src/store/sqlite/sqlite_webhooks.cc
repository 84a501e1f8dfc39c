// The SQLite store's WebhookStore half (tables from metadata migration 5).
#include <algorithm>
#include <map>

#include "store/sqlite/sqlite_metadata_store.h"

namespace deeplens {
namespace {

int64_t to_ms(Timestamp t) { return t.time_since_epoch().count(); }
Timestamp from_ms(int64_t ms) { return Timestamp(std::chrono::milliseconds(ms)); }

constexpr const char* kEndpointColumns =
    "id, tenant_id, url, events, description, enabled, disabled_reason, secret, previous_secret,"
    " previous_secret_until, failing_since, created_at, updated_at";

WebhookEndpoint read_endpoint(const SqliteStatement& s, int at = 0) {
  WebhookEndpoint e;
  e.id = s.text(at + 0);
  e.tenant_id = s.text(at + 1);
  e.url = s.text(at + 2);
  e.events = webhook_events_from_column(s.text(at + 3));
  e.description = s.text(at + 4);
  e.enabled = s.int64(at + 5) != 0;
  e.disabled_reason = s.text(at + 6);
  e.secret = s.text(at + 7);
  e.previous_secret = s.text(at + 8);
  if (!s.is_null(at + 9)) e.previous_secret_until = from_ms(s.int64(at + 9));
  if (!s.is_null(at + 10)) e.failing_since = from_ms(s.int64(at + 10));
  e.created_at = from_ms(s.int64(at + 11));
  e.updated_at = from_ms(s.int64(at + 12));
  return e;
}
// The same columns from the joined endpoint (alias e).
constexpr const char* kEndpointColumnsOfE =
    "e.id, e.tenant_id, e.url, e.events, e.description, e.enabled, e.disabled_reason, e.secret,"
    " e.previous_secret, e.previous_secret_until, e.failing_since, e.created_at, e.updated_at";

constexpr const char* kDeliveryColumns =
    "d.id, d.endpoint_id, d.tenant_id, d.event_type, d.event_id, d.payload, d.status, d.attempt_count,"
    " d.attempts, d.next_attempt_at, d.created_at, d.updated_at";

WebhookDelivery read_delivery(const SqliteStatement& s) {
  WebhookDelivery d;
  d.id = s.text(0);
  d.endpoint_id = s.text(1);
  d.tenant_id = s.text(2);
  d.event_type = s.text(3);
  d.event_id = s.text(4);
  d.payload = s.text(5);
  d.status = parse_delivery_status(s.text(6)).value_or(DeliveryStatus::kPending);
  d.attempt_count = static_cast<int>(s.int64(7));
  d.attempts = delivery_attempts_from_json(s.text(8));
  if (!s.is_null(9)) d.next_attempt_at = from_ms(s.int64(9));
  d.created_at = from_ms(s.int64(10));
  d.updated_at = from_ms(s.int64(11));
  return d;
}
constexpr int kDeliveryColumnCount = 12;

Error webhook_not_found(const std::string& what, const std::string& id) {
  return Error(ErrorCode::kNotFound, "no " + what + " '" + id + "' in this tenant").with("id", id);
}

void bind_opt_ms(SqliteStatement& s, int i, const std::optional<Timestamp>& t) {
  t ? s.bind(i, to_ms(*t)) : s.bind_null(i);
}

}  // namespace

Status sqlite_queue_webhook(SqliteConnection& c, const WebhookEvent& e, Timestamp now,
                            const std::shared_ptr<DeliveryListener>& listener) {
  auto q = c.prepare(
      "INSERT OR IGNORE INTO webhook_deliveries (id, endpoint_id, tenant_id, event_type, event_id, payload,"
      " status, attempt_count, attempts, next_attempt_at, created_at, updated_at)"
      " SELECT 'msg_' || lower(hex(randomblob(16))), id, tenant_id, ?2, ?3, ?4, 'pending', 0, '[]', ?5, ?5, ?5"
      " FROM webhook_endpoints WHERE tenant_id = ?1 AND enabled = 1 AND instr(events, ?6) > 0");
  if (!q) return std::move(q).error();
  (*q)->bind(1, e.tenant_id).bind(2, e.type).bind(3, e.event_id).bind(4, e.payload).bind(5, to_ms(now))
      .bind(6, " " + e.type + " ");
  if (auto st = (*q)->run(); !st) return st;
  if (c.changes() > 0 && listener) c.on_commit([listener] { listener->fire(); });
  return {};
}

Status SqliteMetadataStore::create_webhook(const WebhookEndpoint& e, int max_per_tenant) {
  return db_.write([&](SqliteConnection& c) -> Status {
    auto n = c.prepare("SELECT COUNT(*) FROM webhook_endpoints WHERE tenant_id = ?");
    if (!n) return std::move(n).error();
    (*n)->bind(1, e.tenant_id);
    if (auto row = (*n)->step(); !row) return std::move(row).error();
    const int64_t count = (*n)->int64(0);
    (*n)->reset();
    if (max_per_tenant > 0 && count >= max_per_tenant)
      return Error(ErrorCode::kResourceExhausted,
                   "this tenant has " + std::to_string(count) + " webhooks, the most allowed (webhooks.max_per_tenant)")
          .with("reason", "webhook_limit")
          .with("limit", std::to_string(max_per_tenant));
    auto q = c.prepare(std::string("INSERT INTO webhook_endpoints (") + kEndpointColumns +
                       ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (!q) return std::move(q).error();
    auto& s = **q;
    s.bind(1, e.id).bind(2, e.tenant_id).bind(3, e.url).bind(4, webhook_events_column(e.events))
        .bind(5, e.description).bind(6, e.enabled ? 1 : 0).bind_opt(7, e.disabled_reason).bind(8, e.secret)
        .bind_opt(9, e.previous_secret);
    bind_opt_ms(s, 10, e.previous_secret_until);
    bind_opt_ms(s, 11, e.failing_since);
    s.bind(12, to_ms(e.created_at)).bind(13, to_ms(e.updated_at));
    return s.run();
  });
}

Result<std::vector<WebhookEndpoint>> SqliteMetadataStore::list_webhooks(const std::string& tenant_id) {
  std::vector<WebhookEndpoint> out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(std::string("SELECT ") + kEndpointColumns +
                       " FROM webhook_endpoints WHERE tenant_id = ? ORDER BY created_at, id");
    if (!q) return std::move(q).error();
    (*q)->bind(1, tenant_id);
    while (true) {
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (!*row) return {};
      out.push_back(read_endpoint(**q));
    }
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<WebhookEndpoint> SqliteMetadataStore::get_webhook(const std::string& tenant_id, const std::string& id) {
  WebhookEndpoint out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(std::string("SELECT ") + kEndpointColumns +
                       " FROM webhook_endpoints WHERE tenant_id = ? AND id = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, tenant_id).bind(2, id);
    auto row = (*q)->step();
    if (!row) return std::move(row).error();
    if (!*row) return webhook_not_found("webhook", id);
    out = read_endpoint(**q);
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Status SqliteMetadataStore::update_webhook(const WebhookEndpoint& e) {
  return db_.write([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(
        "UPDATE webhook_endpoints SET url = ?, events = ?, description = ?, enabled = ?, disabled_reason = ?,"
        " secret = ?, previous_secret = ?, previous_secret_until = ?, failing_since = ?, updated_at = ?"
        " WHERE tenant_id = ? AND id = ?");
    if (!q) return std::move(q).error();
    auto& s = **q;
    s.bind(1, e.url).bind(2, webhook_events_column(e.events)).bind(3, e.description).bind(4, e.enabled ? 1 : 0)
        .bind_opt(5, e.disabled_reason).bind(6, e.secret).bind_opt(7, e.previous_secret);
    bind_opt_ms(s, 8, e.previous_secret_until);
    bind_opt_ms(s, 9, e.failing_since);
    s.bind(10, to_ms(e.updated_at)).bind(11, e.tenant_id).bind(12, e.id);
    if (auto st = s.run(); !st) return st;
    if (c.changes() == 0) return webhook_not_found("webhook", e.id);
    return {};
  });
}

Status SqliteMetadataStore::delete_webhook(const std::string& tenant_id, const std::string& id) {
  return db_.write([&](SqliteConnection& c) -> Status {
    auto q = c.prepare("DELETE FROM webhook_endpoints WHERE tenant_id = ? AND id = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, tenant_id).bind(2, id);
    if (auto st = (*q)->run(); !st) return st;
    if (c.changes() == 0) return webhook_not_found("webhook", id);
    auto d = c.prepare("DELETE FROM webhook_deliveries WHERE endpoint_id = ?");
    if (!d) return std::move(d).error();
    (*d)->bind(1, id);
    return (*d)->run();
  });
}

Status SqliteMetadataStore::add_delivery(const WebhookDelivery& d) {
  return db_.write([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(
        "INSERT INTO webhook_deliveries (id, endpoint_id, tenant_id, event_type, event_id, payload, status,"
        " attempt_count, attempts, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (!q) return std::move(q).error();
    auto& s = **q;
    s.bind(1, d.id).bind(2, d.endpoint_id).bind(3, d.tenant_id).bind(4, d.event_type).bind(5, d.event_id)
        .bind(6, d.payload).bind(7, delivery_status_name(d.status)).bind(8, d.attempt_count)
        .bind(9, delivery_attempts_to_json(d.attempts));
    bind_opt_ms(s, 10, d.next_attempt_at);
    s.bind(11, to_ms(d.created_at)).bind(12, to_ms(d.updated_at));
    return s.run();
  });
}

Result<std::vector<ClaimedDelivery>> SqliteMetadataStore::claim_deliveries(const std::string& owner, Timestamp now,
                                                                           std::chrono::milliseconds lease,
                                                                           int limit, int per_endpoint) {
  std::vector<ClaimedDelivery> out;
  const int64_t now_ms = to_ms(now);
  auto st = db_.write([&](SqliteConnection& c) -> Status {
    out.clear();
    std::map<std::string, int> busy;  // endpoint -> deliveries under a live lease
    auto b = c.prepare(
        "SELECT endpoint_id, COUNT(*) FROM webhook_deliveries WHERE status = 'pending' AND claimed_until > ?"
        " GROUP BY endpoint_id");
    if (!b) return std::move(b).error();
    (*b)->bind(1, now_ms);
    while (true) {
      auto row = (*b)->step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      busy[(*b)->text(0)] = static_cast<int>((*b)->int64(1));
    }
    (*b)->reset();
    auto q = c.prepare(std::string("SELECT ") + kDeliveryColumns + ", " + kEndpointColumnsOfE +
                       " FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id"
          " WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND e.enabled = 1"
          " AND (d.claimed_until IS NULL OR d.claimed_until <= ?) ORDER BY d.next_attempt_at LIMIT ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, now_ms).bind(2, now_ms).bind(3, static_cast<int64_t>(limit) * 4);
    while (static_cast<int>(out.size()) < limit) {
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      ClaimedDelivery cd{read_delivery(**q), read_endpoint(**q, kDeliveryColumnCount)};
      int& n = busy[cd.delivery.endpoint_id];
      if (per_endpoint > 0 && n >= per_endpoint) continue;
      ++n;
      out.push_back(std::move(cd));
    }
    (*q)->reset();
    auto claim = c.prepare("UPDATE webhook_deliveries SET claimed_by = ?, claimed_until = ? WHERE id = ?");
    if (!claim) return std::move(claim).error();
    for (const auto& cd : out) {
      (*claim)->reset();
      (*claim)->bind(1, owner).bind(2, now_ms + lease.count()).bind(3, cd.delivery.id);
      if (auto s = (*claim)->run(); !s) return s;
    }
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Status SqliteMetadataStore::record_attempt(const std::string& delivery_id, const AttemptOutcome& o) {
  return db_.write([&](SqliteConnection& c) -> Status {
    auto g = c.prepare("SELECT attempts, endpoint_id FROM webhook_deliveries WHERE id = ?");
    if (!g) return std::move(g).error();
    (*g)->bind(1, delivery_id);
    auto row = (*g)->step();
    if (!row) return std::move(row).error();
    if (!*row) return {};  // its endpoint was deleted meanwhile
    auto attempts = delivery_attempts_from_json((*g)->text(0));
    const std::string endpoint = (*g)->text(1);
    (*g)->reset();
    attempts.push_back(o.attempt);
    if (attempts.size() > kKeptAttempts) attempts.erase(attempts.begin(), attempts.end() - kKeptAttempts);
    auto u = c.prepare(
        "UPDATE webhook_deliveries SET status = ?, attempt_count = attempt_count + 1, attempts = ?,"
        " next_attempt_at = ?, claimed_by = NULL, claimed_until = NULL, updated_at = ? WHERE id = ?");
    if (!u) return std::move(u).error();
    (*u)->bind(1, delivery_status_name(o.status)).bind(2, delivery_attempts_to_json(attempts));
    bind_opt_ms(**u, 3, o.status == DeliveryStatus::kPending ? o.next_attempt_at : std::nullopt);
    (*u)->bind(4, to_ms(o.attempt.at)).bind(5, delivery_id);
    if (auto st = (*u)->run(); !st) return st;
    auto e = c.prepare(o.status == DeliveryStatus::kSucceeded
                           ? "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ?1"
                           : "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, ?2) WHERE id = ?1");
    if (!e) return std::move(e).error();
    (*e)->bind(1, endpoint);
    if (o.status != DeliveryStatus::kSucceeded) (*e)->bind(2, to_ms(o.attempt.at));
    if (auto st = (*e)->run(); !st) return st;
    if (o.disable_endpoint.empty()) return {};
    auto d = c.prepare("UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?, updated_at = ? WHERE id = ?");
    if (!d) return std::move(d).error();
    (*d)->bind(1, o.disable_endpoint).bind(2, to_ms(o.attempt.at)).bind(3, endpoint);
    return (*d)->run();
  });
}

Result<DeliveryPage> SqliteMetadataStore::list_deliveries(const std::string& tenant_id, const std::string& endpoint_id,
                                                          std::optional<DeliveryStatus> status, int limit,
                                                          const std::string& cursor) {
  DeliveryPage out;
  std::optional<std::pair<int64_t, std::string>> after;
  if (!cursor.empty()) {
    auto parsed = parse_delivery_cursor(cursor);
    if (!parsed) return std::move(parsed).error();
    after = *parsed;
  }
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    std::string sql = std::string("SELECT ") + kDeliveryColumns +
                      " FROM webhook_deliveries d WHERE d.tenant_id = ? AND d.endpoint_id = ?";
    if (status) sql += " AND d.status = ?";
    if (after) sql += " AND (d.created_at < ? OR (d.created_at = ? AND d.id < ?))";
    sql += " ORDER BY d.created_at DESC, d.id DESC LIMIT ?";
    auto q = c.prepare(sql);
    if (!q) return std::move(q).error();
    int i = 0;
    (*q)->bind(++i, tenant_id);
    (*q)->bind(++i, endpoint_id);
    if (status) (*q)->bind(++i, delivery_status_name(*status));
    if (after) {
      (*q)->bind(++i, after->first);
      (*q)->bind(++i, after->first);
      (*q)->bind(++i, after->second);
    }
    (*q)->bind(++i, static_cast<int64_t>(limit) + 1);
    while (true) {
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      out.deliveries.push_back(read_delivery(**q));
    }
    return {};
  });
  if (!st) return std::move(st).error();
  if (static_cast<int>(out.deliveries.size()) > limit) {
    out.deliveries.pop_back();
    out.next_cursor = delivery_cursor(out.deliveries.back());
  }
  return out;
}

Result<WebhookDelivery> SqliteMetadataStore::get_delivery(const std::string& tenant_id, const std::string& endpoint_id,
                                                          const std::string& delivery_id) {
  WebhookDelivery out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(std::string("SELECT ") + kDeliveryColumns +
                       " FROM webhook_deliveries d WHERE d.tenant_id = ? AND d.endpoint_id = ? AND d.id = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, tenant_id).bind(2, endpoint_id).bind(3, delivery_id);
    auto row = (*q)->step();
    if (!row) return std::move(row).error();
    if (!*row) return webhook_not_found("delivery", delivery_id);
    out = read_delivery(**q);
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Status SqliteMetadataStore::redeliver(const std::string& tenant_id, const std::string& endpoint_id,
                                      const std::string& delivery_id, Timestamp now) {
  return db_.write([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, updated_at = ?"
        " WHERE tenant_id = ? AND endpoint_id = ? AND id = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, to_ms(now)).bind(2, to_ms(now)).bind(3, tenant_id).bind(4, endpoint_id).bind(5, delivery_id);
    if (auto st = (*q)->run(); !st) return st;
    if (c.changes() == 0) return webhook_not_found("delivery", delivery_id);
    return {};
  });
}

Result<std::vector<std::pair<std::string, int64_t>>> SqliteMetadataStore::pending_deliveries() {
  std::vector<std::pair<std::string, int64_t>> out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(
        "SELECT endpoint_id, COUNT(*) FROM webhook_deliveries WHERE status = 'pending' GROUP BY endpoint_id"
        " ORDER BY endpoint_id");
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

Result<std::optional<Timestamp>> SqliteMetadataStore::next_delivery_due() {
  std::optional<Timestamp> out;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(
        "SELECT MIN(d.next_attempt_at) FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id"
        " WHERE d.status = 'pending' AND e.enabled = 1");
    if (!q) return std::move(q).error();
    auto row = (*q)->step();
    if (!row) return std::move(row).error();
    if (*row && !(*q)->is_null(0)) out = from_ms((*q)->int64(0));
    return {};
  });
  if (!st) return std::move(st).error();
  return out;
}

Result<int64_t> SqliteMetadataStore::trim_deliveries(Timestamp before) {
  int64_t removed = 0;
  auto st = db_.write([&](SqliteConnection& c) -> Status {
    auto q = c.prepare("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND updated_at < ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, to_ms(before));
    if (auto r = (*q)->run(); !r) return r;
    removed = c.changes();
    return {};
  });
  if (!st) return std::move(st).error();
  return removed;
}

}  // namespace deeplens
