#include "store/sqlite/sqlite_database.h"

#include <thread>
#include <utility>

namespace deeplens {

SqliteStatement& SqliteStatement::bind(int index, std::string_view text) {
  sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  return *this;
}
SqliteStatement& SqliteStatement::bind(int index, int64_t value) {
  sqlite3_bind_int64(stmt_, index, value);
  return *this;
}
SqliteStatement& SqliteStatement::bind(int index, double value) {
  sqlite3_bind_double(stmt_, index, value);
  return *this;
}
SqliteStatement& SqliteStatement::bind_null(int index) {
  sqlite3_bind_null(stmt_, index);
  return *this;
}
SqliteStatement& SqliteStatement::bind_blob(int index, std::string_view bytes) {
  sqlite3_bind_blob(stmt_, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  return *this;
}
SqliteStatement& SqliteStatement::bind_opt(int index, std::string_view text) {
  return text.empty() ? bind_null(index) : bind(index, text);
}

Result<bool> SqliteStatement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  sqlite3* db = sqlite3_db_handle(stmt_);
  const ErrorCode code = (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) ? ErrorCode::kUnavailable
                         : rc == SQLITE_CONSTRAINT                  ? ErrorCode::kAlreadyExists
                                                                    : ErrorCode::kIoError;
  return Error(code, std::string("sqlite: ") + sqlite3_errmsg(db))
      .with("sql", sqlite3_sql(stmt_) ? sqlite3_sql(stmt_) : "");
}

Status SqliteStatement::run() {
  while (true) {
    auto r = step();
    if (!r) return std::move(r).error();
    if (!*r) return {};
  }
}

std::string SqliteStatement::text(int column) const {
  const auto* p = sqlite3_column_text(stmt_, column);
  const int n = sqlite3_column_bytes(stmt_, column);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}
int64_t SqliteStatement::int64(int column) const { return sqlite3_column_int64(stmt_, column); }
double SqliteStatement::real(int column) const { return sqlite3_column_double(stmt_, column); }
bool SqliteStatement::is_null(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}
void SqliteStatement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

Result<std::unique_ptr<SqliteConnection>> SqliteConnection::open(const std::filesystem::path& path,
                                                                 bool read_only) {
  sqlite3* db = nullptr;
  const int flags = (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                    SQLITE_OPEN_NOMUTEX;
  const int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return Error(ErrorCode::kIoError, "cannot open database: " + msg).with("path", path.string());
  }
  return std::unique_ptr<SqliteConnection>(new SqliteConnection(db));
}

SqliteConnection::~SqliteConnection() {
  cache_.clear();
  sqlite3_close(db_);
}

Error SqliteConnection::error(std::string_view what) const {
  return Error(ErrorCode::kIoError, std::string(what) + ": " + sqlite3_errmsg(db_));
}

Status SqliteConnection::exec(std::string_view sql) {
  char* err = nullptr;
  const std::string s(sql);
  const int rc = sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return Error(rc == SQLITE_BUSY ? ErrorCode::kUnavailable : ErrorCode::kIoError, "sqlite: " + msg)
        .with("sql", s.substr(0, 200));
  }
  return {};
}

void SqliteConnection::reset_all() {
  for (auto& [sql, stmt] : cache_) sqlite3_reset(stmt->raw());
}

Result<SqliteStatement*> SqliteConnection::prepare(const std::string& sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end()) {
    it->second->reset();
    return it->second.get();
  }
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                         &stmt, nullptr) != SQLITE_OK)
    return error("prepare").with("sql", sql);
  auto* raw = new SqliteStatement(stmt);
  cache_.emplace(sql, std::unique_ptr<SqliteStatement>(raw));
  return raw;
}

SqliteDatabase::SqliteDatabase(std::filesystem::path path, const SqliteOptions& options)
    : path_(std::move(path)), options_(options) {}

SqliteDatabase::~SqliteDatabase() = default;

Result<std::unique_ptr<SqliteDatabase>> SqliteDatabase::open(const std::filesystem::path& path,
                                                            const SqliteOptions& options) {
  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  std::unique_ptr<SqliteDatabase> db(new SqliteDatabase(path, options));
  auto writer = SqliteConnection::open(path, false);
  if (!writer) return std::move(writer).error();
  db->writer_ = std::move(writer).value();
  const std::string pragmas = "PRAGMA busy_timeout=" + std::to_string(options.busy_timeout_ms) +
                              "; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                              " PRAGMA foreign_keys=ON;";
  if (auto st = db->writer_->exec(pragmas); !st) return std::move(st).error().with("path", path.string());
  return db;
}

Status SqliteDatabase::migrate(const std::string& component,
                               const std::vector<SqliteMigration>& migrations) {
  return write([&](SqliteConnection& c) -> Status {
    if (auto st = c.exec("CREATE TABLE IF NOT EXISTS schema_migrations ("
                         " component TEXT NOT NULL, version INTEGER NOT NULL,"
                         " applied_at INTEGER NOT NULL, PRIMARY KEY (component, version))");
        !st)
      return st;
    auto q = c.prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = ?");
    if (!q) return std::move(q).error();
    (*q)->bind(1, component);
    auto row = (*q)->step();
    if (!row) return std::move(row).error();
    const int64_t current = (*q)->int64(0);
    (*q)->reset();
    for (const auto& m : migrations) {
      if (m.version <= current) continue;
      if (auto st = c.exec(m.sql); !st)
        return std::move(st).error().with("component", component).with("migration", std::to_string(m.version));
      auto ins = c.prepare("INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, strftime('%s','now'))");
      if (!ins) return std::move(ins).error();
      (*ins)->bind(1, component).bind(2, static_cast<int64_t>(m.version));
      if (auto st = (*ins)->run(); !st) return st;
    }
    return {};
  });
}

Status SqliteDatabase::write(const std::function<Status(SqliteConnection&)>& fn) {
  Status result;
  std::vector<std::function<void()>> committed;
  {
    std::lock_guard lock(write_mu_);
    // Another process may hold the write lock briefly; busy_timeout covers BEGIN IMMEDIATE.
    if (auto st = writer_->exec("BEGIN IMMEDIATE"); !st) return st;
    result = fn(*writer_);
    writer_->reset_all();
    committed = std::exchange(writer_->on_commit_, {});
    if (result.ok()) {
      if (auto st = writer_->exec("COMMIT"); !st) {
        (void)writer_->exec("ROLLBACK");
        return st;
      }
    } else {
      (void)writer_->exec("ROLLBACK");
      return result;
    }
  }
  for (auto& f : committed) f();
  std::vector<std::function<void()>> listeners;
  {
    std::lock_guard lock(listeners_mu_);
    listeners = listeners_;
  }
  for (auto& l : listeners) l();
  return result;
}

Status SqliteDatabase::read(const std::function<Status(SqliteConnection&)>& fn) {
  std::unique_ptr<SqliteConnection> conn;
  {
    std::lock_guard lock(readers_mu_);
    if (!idle_readers_.empty()) {
      conn = std::move(idle_readers_.back());
      idle_readers_.pop_back();
    }
  }
  if (!conn) {
    auto opened = SqliteConnection::open(path_, false);
    if (!opened) return std::move(opened).error();
    conn = std::move(opened).value();
    if (auto st = conn->exec("PRAGMA busy_timeout=" + std::to_string(options_.busy_timeout_ms) +
                             "; PRAGMA query_only=ON;");
        !st)
      return st;
  }
  Status st;
  if (auto b = conn->exec("BEGIN"); !b) {
    st = b;
  } else {
    st = fn(*conn);
    conn->reset_all();
    (void)conn->exec("COMMIT");
  }
  std::lock_guard lock(readers_mu_);
  if (static_cast<int>(idle_readers_.size()) < options_.reader_connections)
    idle_readers_.push_back(std::move(conn));
  return st;
}

Result<int64_t> SqliteDatabase::read_int64(const std::string& sql) {
  int64_t n = 0;
  auto st = read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare(sql);
    if (!q) return std::move(q).error();
    auto row = (*q)->step();
    if (!row) return std::move(row).error();
    if (*row) n = (*q)->int64(0);
    return {};
  });
  if (!st) return std::move(st).error();
  return n;
}

void SqliteDatabase::add_commit_listener(std::function<void()> listener) {
  std::lock_guard lock(listeners_mu_);
  listeners_.push_back(std::move(listener));
}

}  // namespace deeplens
