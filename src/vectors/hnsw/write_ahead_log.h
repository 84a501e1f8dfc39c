// WriteAheadLog: the append-only record of upserts and removes of one collection, in numbered
// segment files <dir>/wal-<generation>.log. A change is acknowledged only after its record is on
// disk; the index is a cache of "last snapshot + log".
//
// Record layout (little-endian):
//   u32 payload_size | u32 crc32(payload_size bytes + payload) | payload
//   payload = u8 op (1 upsert, 2 remove) | u32 id_size | id bytes | [u32 dimension | floats]
// A crash can leave a torn final record (kill -9 mid-write, power loss before fsync);
// scan_segment() stops at the first record that is incomplete or fails its CRC, and open()
// truncates the segment there. Everything acknowledged lies before that point, because a record
// is acknowledged only after an fdatasync that covers it and every record before it.
//
// Group commit: append() only write()s (page cache, microseconds); sync(lsn) waits until the log
// is durable up to lsn. One caller at a time runs fdatasync for everything appended so far and
// the callers that arrive meanwhile wait for it or the next one, so N concurrent writers pay about
// one fsync per round instead of N.
//
// Thread-safety: all methods are safe to call concurrently. The caller orders appends (the order
// of append() calls is the replay order). After a failed write or fsync the log refuses further
// appends and syncs (the page cache state is unknown after a failed fsync); reopen to recover.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace deeplens::hnsw {

enum class LogOp : uint8_t { kUpsert = 1, kRemove = 2 };

struct LogRecord {
  LogOp op = LogOp::kUpsert;
  std::string id;
  std::vector<float> vector;  // empty for kRemove
};

// Appends one encoded record to out.
void encode_upsert(std::string& out, std::string_view id, std::span<const float> vector);
void encode_remove(std::string& out, std::string_view id);

// "<dir>/wal-<generation, 20 digits>.log"; generation 7 -> "wal-00000000000000000007.log".
std::string segment_path(const std::string& dir, uint64_t generation);
// The generation of a segment file name, or nullopt if the name is not a segment's.
std::optional<uint64_t> parse_segment_name(std::string_view file_name);

struct SegmentScan {
  uint64_t records = 0;      // intact records read
  uint64_t valid_bytes = 0;  // length of the intact prefix
  uint64_t file_bytes = 0;   // length of the file
};

// Calls on_record for every intact record from the start of the segment, in order, and stops at
// the end or at the first torn or corrupt record. A record whose vector does not have
// `dimension` floats passes its CRC but cannot belong to this collection: kInternal.
Result<SegmentScan> scan_segment(const std::string& path, size_t dimension,
                                 const std::function<void(LogRecord&&)>& on_record);

class WriteAheadLog {
 public:
  // Opens segment `generation` in dir for appending, creating it (and fsyncing dir) if absent.
  // An existing segment is first truncated to valid_bytes (from scan_segment) and fsynced.
  // sync=false skips fdatasync (benchmarks of the index alone; never in production).
  static Result<std::unique_ptr<WriteAheadLog>> open(const std::string& dir, uint64_t generation,
                                                     uint64_t valid_bytes, bool sync);
  ~WriteAheadLog();
  WriteAheadLog(const WriteAheadLog&) = delete;
  WriteAheadLog& operator=(const WriteAheadLog&) = delete;

  // Writes bytes (whole encoded records) with one write; returns the log position just past them.
  // A failed or short write is undone (ftruncate) so no torn record is left before later ones.
  Result<uint64_t> append(std::string_view bytes);
  // Returns once everything appended up to lsn is durable (group commit).
  Status sync(uint64_t lsn);
  // The log position just past the last append.
  uint64_t end_lsn() const;
  // Makes the current segment durable, then continues in a new segment new_generation (which must
  // not exist). Records appended before rotate() are in the old segment, later ones in the new.
  Status rotate(uint64_t new_generation);
  uint64_t generation() const;

 private:
  WriteAheadLog(std::string dir, uint64_t generation, int fd, uint64_t size, bool sync);

  const std::string dir_;
  const bool sync_;
  mutable std::mutex mu_;
  std::condition_variable synced_cv_;
  uint64_t generation_;     // guarded by mu_
  std::string path_;        // guarded by mu_
  int fd_;                  // guarded by mu_; replaced only by rotate() while no fsync runs
  uint64_t file_size_;      // guarded by mu_: bytes in the current segment
  uint64_t end_lsn_ = 0;    // guarded by mu_: bytes appended since open, all segments
  uint64_t synced_lsn_ = 0; // guarded by mu_
  bool syncing_ = false;    // guarded by mu_: an fdatasync is running outside the lock
  std::optional<Error> failed_;  // guarded by mu_: sticky after a failed write or fsync
};

}  // namespace deeplens::hnsw
