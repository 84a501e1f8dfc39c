// SqliteDatabase: one SQLite file in WAL mode shared by the metadata store and the sqlite_log
// event bus (so an upload's row and its event can commit in one transaction).
//
// Writes go through one writer connection behind a mutex (SQLite has one writer at a time anyway;
// an in-process mutex hands over faster than SQLite's busy-sleep loop). Reads use a small pool of
// reader connections that run concurrently with the writer (WAL). synchronous=FULL: a committed
// write survives power loss. Each component applies its own versioned migrations.
//
// Thread-safe. Owned by app/; outlives every component that uses it.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.h"

namespace deeplens {

// A prepared statement; reset and cleared bindings on every use via SqliteConnection::prepare.
class SqliteStatement {
 public:
  explicit SqliteStatement(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~SqliteStatement() { sqlite3_finalize(stmt_); }
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;

  SqliteStatement& bind(int index, std::string_view text);
  SqliteStatement& bind(int index, int64_t value);
  SqliteStatement& bind(int index, int value) { return bind(index, static_cast<int64_t>(value)); }
  SqliteStatement& bind(int index, double value);
  SqliteStatement& bind_null(int index);
  SqliteStatement& bind_blob(int index, std::string_view bytes);
  // Binds text, or NULL when empty.
  SqliteStatement& bind_opt(int index, std::string_view text);

  // Steps once: true when a row is available, false when done.
  Result<bool> step();
  // Steps to completion (for statements without result rows).
  Status run();

  std::string text(int column) const;
  int64_t int64(int column) const;
  double real(int column) const;
  bool is_null(int column) const;

  void reset();
  sqlite3_stmt* raw() { return stmt_; }

 private:
  sqlite3_stmt* stmt_;
};

class SqliteConnection {
 public:
  static Result<std::unique_ptr<SqliteConnection>> open(const std::filesystem::path& path, bool read_only);
  ~SqliteConnection();

  Status exec(std::string_view sql);
  // A cached prepared statement, reset and ready to bind.
  Result<SqliteStatement*> prepare(const std::string& sql);
  int64_t changes() const { return sqlite3_changes64(db_); }
  // Resets every cached statement: a statement left mid-result would otherwise keep its read
  // snapshot open past COMMIT, and later transactions would not see newer writes.
  void reset_all();
  Error error(std::string_view what) const;

  // Inside SqliteDatabase::write: runs fn once the transaction has committed (after the write
  // lock is released); dropped when it rolls back. What a transaction did is known only to it, so
  // "wake whoever waits for this" belongs here rather than in a flag shared by every transaction.
  void on_commit(std::function<void()> fn) { on_commit_.push_back(std::move(fn)); }

 private:
  friend class SqliteDatabase;
  explicit SqliteConnection(sqlite3* db) : db_(db) {}
  sqlite3* db_;
  std::unordered_map<std::string, std::unique_ptr<SqliteStatement>> cache_;
  std::vector<std::function<void()>> on_commit_;
};

struct SqliteOptions {
  int busy_timeout_ms = 10000;  // other processes holding the write lock (api + worker on one file)
  int reader_connections = 4;
};

struct SqliteMigration {
  int version;
  std::string sql;
};

class SqliteDatabase {
 public:
  static Result<std::unique_ptr<SqliteDatabase>> open(const std::filesystem::path& path,
                                                      const SqliteOptions& options = {});
  ~SqliteDatabase();

  // Applies the component's migrations above its recorded version, each in its own transaction.
  Status migrate(const std::string& component, const std::vector<SqliteMigration>& migrations);

  // Runs fn in BEGIN IMMEDIATE ... COMMIT on the writer connection; rolls back when fn fails.
  Status write(const std::function<Status(SqliteConnection&)>& fn);
  // Runs fn on a reader connection (a consistent snapshot for the duration of fn).
  Status read(const std::function<Status(SqliteConnection&)>& fn);

  // The first column of the first row of a parameterless query on a reader (NULL reads as 0):
  // counts and the like.
  Result<int64_t> read_int64(const std::string& sql);

  // Called (outside the lock) after every successful write commit in this process.
  void add_commit_listener(std::function<void()> listener);

  const std::filesystem::path& path() const { return path_; }

 private:
  SqliteDatabase(std::filesystem::path path, const SqliteOptions& options);

  std::filesystem::path path_;
  SqliteOptions options_;
  std::mutex write_mu_;
  std::unique_ptr<SqliteConnection> writer_;
  std::mutex readers_mu_;
  std::vector<std::unique_ptr<SqliteConnection>> idle_readers_;
  std::mutex listeners_mu_;
  std::vector<std::function<void()>> listeners_;
};

}  // namespace deeplens
