#include "bus/sqlite_log/sqlite_log_bus.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/log.h"

namespace deeplens {
namespace {

int64_t to_ms(Timestamp t) { return t.time_since_epoch().count(); }

const std::vector<SqliteMigration>& migrations() {
  static const std::vector<SqliteMigration> kMigrations = {
      {1, R"sql(
CREATE TABLE bus_partitions (
  topic TEXT NOT NULL,
  partition INTEGER NOT NULL,
  next_offset INTEGER NOT NULL,
  PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
CREATE TABLE bus_log (
  topic TEXT NOT NULL,
  partition INTEGER NOT NULL,
  offset INTEGER NOT NULL,
  key TEXT NOT NULL,
  headers TEXT NOT NULL,
  payload TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;
CREATE TABLE bus_offsets (
  consumer_group TEXT NOT NULL,
  topic TEXT NOT NULL,
  partition INTEGER NOT NULL,
  next_offset INTEGER NOT NULL,
  PRIMARY KEY (consumer_group, topic, partition)
) WITHOUT ROWID;
CREATE TABLE bus_members (
  consumer_group TEXT NOT NULL,
  member_id TEXT NOT NULL,
  heartbeat_at INTEGER NOT NULL,
  PRIMARY KEY (consumer_group, member_id)
) WITHOUT ROWID;
)sql"},
  };
  return kMigrations;
}

class SqliteLogConsumer final : public Consumer {
 public:
  SqliteLogConsumer(SqliteLogBus& bus, ConsumerOptions options, std::string member_id)
      : bus_(bus), options_(std::move(options)), member_id_(std::move(member_id)) {}
  ~SqliteLogConsumer() override { close(); }

  Status join() {
    if (options_.broadcast) return start_at_end();
    return bus_.db().write([&](SqliteConnection& c) -> Status {
      for (const auto& topic : options_.topics) {
        for (int p = 0; p < bus_.options().partitions; ++p) {
          auto q = c.prepare("INSERT INTO bus_offsets (consumer_group, topic, partition, next_offset)"
                             " VALUES (?, ?, ?, 0) ON CONFLICT DO NOTHING");
          if (!q) return std::move(q).error();
          (*q)->bind(1, options_.group).bind(2, topic).bind(3, p);
          if (auto st = (*q)->run(); !st) return st;
        }
      }
      return heartbeat(c);
    });
  }

  Result<std::vector<BusMessage>> poll(std::chrono::milliseconds timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      // The flag is only cleared when it is acted on: a wake() that lands between a wait's timeout
      // and the next turn must still end this poll (or the next one, per the interface).
      if (woken_.exchange(false)) return std::vector<BusMessage>{};
      const uint64_t seen = bus_.publish_seq();
      auto batch = fetch();
      if (!batch) return batch;
      if (!batch->empty() || closed_) return batch;
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return batch;
      const auto wait = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now),
                                 bus_.options().cross_process_poll);
      bus_.wait_for_publish(seen, wait, [&] { return woken_.load(); });
    }
  }

  Status commit(const BusMessage& msg) override {
    if (options_.broadcast) return {};
    auto st = bus_.db().write([&](SqliteConnection& c) -> Status {
      auto q = c.prepare("UPDATE bus_offsets SET next_offset = MAX(next_offset, ?) WHERE consumer_group = ?"
                         " AND topic = ? AND partition = ?");
      if (!q) return std::move(q).error();
      (*q)->bind(1, msg.offset + 1).bind(2, options_.group).bind(3, msg.topic).bind(4, msg.partition);
      return (*q)->run();
    });
    if (!st) return st;
    maybe_trim();
    return {};
  }

  void rewind(const BusMessage& msg) override {
    auto it = positions_.find({msg.topic, msg.partition});
    if (it != positions_.end() && it->second > msg.offset) it->second = msg.offset;
  }

  void pause(const std::string& topic, bool paused) override {
    if (paused) paused_.insert(topic);
    else paused_.erase(topic);
  }

  void wake() override {
    woken_ = true;
    bus_.notify_all();
  }

  void close() override {
    if (closed_.exchange(true)) return;
    if (options_.broadcast) return;
    auto st = bus_.db().write([&](SqliteConnection& c) -> Status {
      auto q = c.prepare("DELETE FROM bus_members WHERE consumer_group = ? AND member_id = ?");
      if (!q) return std::move(q).error();
      (*q)->bind(1, options_.group).bind(2, member_id_);
      return (*q)->run();
    });
    if (!st) log_warn("bus.leave_failed", {{"group", options_.group}, {"error", st.error().to_string()}});
  }

 private:
  // Broadcast: every partition, from its current end.
  Status start_at_end() {
    return bus_.db().read([&](SqliteConnection& c) -> Status {
      auto q = c.prepare("SELECT next_offset FROM bus_partitions WHERE topic = ? AND partition = ?");
      if (!q) return std::move(q).error();
      for (const auto& topic : options_.topics) {
        for (int p = 0; p < bus_.options().partitions; ++p) {
          (*q)->reset();
          (*q)->bind(1, topic).bind(2, p);
          auto row = (*q)->step();
          if (!row) return std::move(row).error();
          positions_[{topic, p}] = *row ? (*q)->int64(0) : 0;
        }
      }
      return {};
    });
  }

  Status heartbeat(SqliteConnection& c) {
    const int64_t now = to_ms(bus_.clock().now());
    auto q = c.prepare("INSERT INTO bus_members (consumer_group, member_id, heartbeat_at) VALUES (?, ?, ?)"
                       " ON CONFLICT (consumer_group, member_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at");
    if (!q) return std::move(q).error();
    (*q)->bind(1, options_.group).bind(2, member_id_).bind(3, now);
    if (auto st = (*q)->run(); !st) return st;
    auto d = c.prepare("DELETE FROM bus_members WHERE consumer_group = ? AND heartbeat_at < ?");
    if (!d) return std::move(d).error();
    (*d)->bind(1, options_.group).bind(2, now - 3 * bus_.options().member_timeout.count());
    last_heartbeat_ = std::chrono::steady_clock::now();
    return (*d)->run();
  }

  Result<std::vector<BusMessage>> fetch() {
    if (!options_.broadcast && std::chrono::steady_clock::now() - last_heartbeat_ > bus_.options().heartbeat_interval) {
      if (auto st = bus_.db().write([&](SqliteConnection& c) { return heartbeat(c); }); !st)
        return std::move(st).error();
    }
    std::vector<BusMessage> out;
    auto st = bus_.db().read([&](SqliteConnection& c) -> Status {
      std::set<std::pair<std::string, int>> assigned;
      if (options_.broadcast) {
        for (const auto& [tp, _] : positions_) assigned.insert(tp);
        return read_partitions(c, assigned, out);
      }
      // Live members, sorted: this member owns partitions p with p % n == index.
      auto m = c.prepare("SELECT member_id FROM bus_members WHERE consumer_group = ? AND heartbeat_at >= ? ORDER BY member_id");
      if (!m) return std::move(m).error();
      (*m)->bind(1, options_.group).bind(2, to_ms(bus_.clock().now()) - bus_.options().member_timeout.count());
      std::vector<std::string> members;
      while (true) {
        auto row = (*m)->step();
        if (!row) return std::move(row).error();
        if (!*row) break;
        members.push_back((*m)->text(0));
      }
      auto self = std::find(members.begin(), members.end(), member_id_);
      if (self == members.end()) members.push_back(member_id_);  // our heartbeat is about to land
      std::sort(members.begin(), members.end());
      const size_t n = members.size();
      const size_t index = static_cast<size_t>(std::find(members.begin(), members.end(), member_id_) - members.begin());

      for (const auto& topic : options_.topics)
        for (int p = 0; p < bus_.options().partitions; ++p)
          if (static_cast<size_t>(p) % n == index) assigned.emplace(topic, p);
      // Forget positions of partitions no longer ours; new ones start at the committed offset.
      for (auto it = positions_.begin(); it != positions_.end();)
        it = assigned.count(it->first) ? std::next(it) : positions_.erase(it);
      // Paused topics stay ours (positions kept) but are not read.
      std::erase_if(assigned, [&](const auto& tp) { return paused_.count(tp.first) > 0; });
      return read_partitions(c, assigned, out);
    });
    if (!st) return std::move(st).error();
    return out;
  }

  // Reads from each assigned partition (from our position, or the group's committed offset when
  // that is further) until the batch is full.
  Status read_partitions(SqliteConnection& c, const std::set<std::pair<std::string, int>>& assigned,
                         std::vector<BusMessage>& out) {
      // Two queries tell which partitions have anything past this consumer's position (the ends,
      // kept by every append in its own transaction, and the group's committed offsets), so only
      // those are read: a wake-up costs two queries plus one per partition with news, not one per
      // partition.
      std::map<std::pair<std::string, int>, int64_t> ends, committed_offsets;
      auto e = c.prepare("SELECT topic, partition, next_offset FROM bus_partitions");
      if (!e) return std::move(e).error();
      while (true) {
        auto row = (*e)->step();
        if (!row) return std::move(row).error();
        if (!*row) break;
        ends[{(*e)->text(0), static_cast<int>((*e)->int64(1))}] = (*e)->int64(2);
      }
      if (!options_.broadcast) {
        auto o = c.prepare("SELECT topic, partition, next_offset FROM bus_offsets WHERE consumer_group = ?");
        if (!o) return std::move(o).error();
        (*o)->bind(1, options_.group);
        while (true) {
          auto row = (*o)->step();
          if (!row) return std::move(row).error();
          if (!*row) break;
          committed_offsets[{(*o)->text(0), static_cast<int>((*o)->int64(1))}] = (*o)->int64(2);
        }
      }
      auto fetch = c.prepare("SELECT offset, key, headers, payload, created_at FROM bus_log WHERE topic = ?"
                             " AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?");
      if (!fetch) return std::move(fetch).error();
      // Rotate the starting partition so no partition starves.
      std::vector<std::pair<std::string, int>> order(assigned.begin(), assigned.end());
      if (!order.empty()) std::rotate(order.begin(), order.begin() + static_cast<long>(rotation_++ % order.size()), order.end());
      // The partitions with news share the batch evenly (one that has fewer leaves its share to
      // the rest), so a topic's partitions advance together: a lane stays close to FIFO.
      std::vector<std::pair<std::pair<std::string, int>, int64_t>> news;  // partition, from
      for (const auto& tp : order) {
        auto committed = committed_offsets.find(tp);
        const int64_t committed_offset = committed == committed_offsets.end() ? 0 : committed->second;
        auto pos = positions_.find(tp);
        const int64_t from = pos == positions_.end() ? committed_offset : std::max(pos->second, committed_offset);
        auto end = ends.find(tp);
        if (end == ends.end() || end->second <= from) continue;  // nothing new there
        news.emplace_back(tp, from);
      }
      for (size_t k = 0; k < news.size() && out.size() < options_.max_batch; ++k) {
        const auto& [tp, from] = news[k];
        const size_t left = options_.max_batch - out.size(), sharing = news.size() - k;
        const auto limit = static_cast<int64_t>((left + sharing - 1) / sharing);
        (*fetch)->reset();
        (*fetch)->bind(1, tp.first).bind(2, tp.second).bind(3, from).bind(4, limit);
        while (true) {
          auto r = (*fetch)->step();
          if (!r) return std::move(r).error();
          if (!*r) break;
          BusMessage msg;
          msg.topic = tp.first;
          msg.partition = tp.second;
          msg.offset = (*fetch)->int64(0);
          msg.key = (*fetch)->text(1);
          msg.headers = headers_from_json((*fetch)->text(2));
          msg.payload = (*fetch)->text(3);
          msg.timestamp = Timestamp(std::chrono::milliseconds((*fetch)->int64(4)));
          positions_[tp] = msg.offset + 1;
          out.push_back(std::move(msg));
        }
      }
      return {};
  }

  void maybe_trim() {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_trim_ < std::chrono::seconds(5)) return;
    last_trim_ = now;
    auto trimmed = bus_.trim();
    if (!trimmed) log_warn("bus.trim_failed", {{"error", trimmed.error().to_string()}});
  }

  SqliteLogBus& bus_;
  ConsumerOptions options_;
  std::string member_id_;
  std::map<std::pair<std::string, int>, int64_t> positions_;
  std::set<std::string> paused_;  // topics not read (flow control); consumer thread only
  std::atomic<bool> woken_{false};
  std::atomic<bool> closed_{false};
  size_t rotation_ = 0;
  std::chrono::steady_clock::time_point last_heartbeat_{};
  std::chrono::steady_clock::time_point last_trim_ = std::chrono::steady_clock::now();
};

}  // namespace

Result<std::unique_ptr<SqliteLogBus>> SqliteLogBus::open(SqliteDatabase& db, const Clock& clock,
                                                        RandomSource& random, const SqliteLogOptions& options) {
  if (auto st = db.migrate("bus", migrations()); !st) return std::move(st).error();
  std::unique_ptr<SqliteLogBus> bus(new SqliteLogBus(db, clock, random, options));
  return bus;
}

SqliteLogBus::~SqliteLogBus() = default;

int SqliteLogBus::partition_for(std::string_view key) const {
  uint32_t h = 2166136261u;  // FNV-1a: stable across processes and versions
  for (unsigned char c : key) {
    h ^= c;
    h *= 16777619u;
  }
  return static_cast<int>(h % static_cast<uint32_t>(options_.partitions));
}

Status SqliteLogBus::append(SqliteConnection& c, const OutboxMessage& m) {
  const int partition = partition_for(m.key);
  auto ins = c.prepare("INSERT INTO bus_partitions (topic, partition, next_offset) VALUES (?, ?, 0) ON CONFLICT DO NOTHING");
  if (!ins) return std::move(ins).error();
  (*ins)->bind(1, m.topic).bind(2, partition);
  if (auto st = (*ins)->run(); !st) return st;
  auto next = c.prepare("UPDATE bus_partitions SET next_offset = next_offset + 1 WHERE topic = ? AND partition = ? RETURNING next_offset - 1");
  if (!next) return std::move(next).error();
  (*next)->bind(1, m.topic).bind(2, partition);
  auto row = (*next)->step();
  if (!row) return std::move(row).error();
  const int64_t offset = (*next)->int64(0);
  (*next)->reset();
  auto log = c.prepare("INSERT INTO bus_log (topic, partition, offset, key, headers, payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)");
  if (!log) return std::move(log).error();
  (*log)->bind(1, m.topic).bind(2, partition).bind(3, offset).bind(4, m.key).bind(5, headers_to_json(m.headers))
      .bind(6, m.payload).bind(7, to_ms(clock_.now()));
  if (auto st = (*log)->run(); !st) return st;
  c.on_commit([this] { notify_all(); });  // wake this process's consumers once it is visible
  return {};
}

Status SqliteLogBus::publish(const OutboxMessage& message) {
  return db_.write([&](SqliteConnection& c) { return append(c, message); });
}

Result<std::unique_ptr<Consumer>> SqliteLogBus::subscribe(const ConsumerOptions& options) {
  if (options.group.empty() || options.topics.empty())
    return Error(ErrorCode::kInvalidArgument, "a consumer needs a group and at least one topic");
  auto consumer = std::make_unique<SqliteLogConsumer>(*this, options, ids_.uuid_v4());
  if (auto st = consumer->join(); !st) return std::move(st).error();
  return std::unique_ptr<Consumer>(std::move(consumer));
}

Result<int64_t> SqliteLogBus::lag(const std::string& group, const std::vector<std::string>& topics) {
  int64_t total = 0;
  auto st = db_.read([&](SqliteConnection& c) -> Status {
    auto q = c.prepare("SELECT COALESCE(SUM(p.next_offset - COALESCE(o.next_offset, 0)), 0) FROM bus_partitions p"
                       " LEFT JOIN bus_offsets o ON o.topic = p.topic AND o.partition = p.partition AND o.consumer_group = ?"
                       " WHERE p.topic = ?");
    if (!q) return std::move(q).error();
    for (const auto& t : topics) {
      (*q)->reset();
      (*q)->bind(1, group).bind(2, t);
      auto row = (*q)->step();
      if (!row) return std::move(row).error();
      total += (*q)->int64(0);
    }
    return {};
  });
  if (!st) return std::move(st).error();
  return total;
}

Status SqliteLogBus::ping() { return db_.read([](SqliteConnection& c) { return c.exec("SELECT 1"); }); }

Result<int64_t> SqliteLogBus::trim() {
  int64_t deleted = 0;
  auto st = db_.write([&](SqliteConnection& c) -> Status {
    auto q = c.prepare("DELETE FROM bus_log WHERE created_at < ? AND offset < (SELECT MIN(o.next_offset) FROM bus_offsets o"
                       " WHERE o.topic = bus_log.topic AND o.partition = bus_log.partition)");
    if (!q) return std::move(q).error();
    (*q)->bind(1, to_ms(clock_.now()) - static_cast<int64_t>(options_.retention.count()));
    if (auto r = (*q)->run(); !r) return r;
    deleted = c.changes();
    return {};
  });
  if (!st) return std::move(st).error();
  return deleted;
}

Result<int64_t> SqliteLogBus::stored_messages() { return db_.read_int64("SELECT COUNT(*) FROM bus_log"); }

uint64_t SqliteLogBus::publish_seq() {
  std::lock_guard lock(mu_);
  return publish_seq_;
}

void SqliteLogBus::wait_for_publish(uint64_t seen, std::chrono::milliseconds timeout,
                                    const std::function<bool()>& woken) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return publish_seq_ != seen || woken(); });
}

void SqliteLogBus::notify_all() {
  {
    std::lock_guard lock(mu_);
    ++publish_seq_;
  }
  cv_.notify_all();
}

}  // namespace deeplens
