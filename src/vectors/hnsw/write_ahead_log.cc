#include "vectors/hnsw/write_ahead_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "vectors/hnsw/durable_file.h"

namespace deeplens::hnsw {

static_assert(std::endian::native == std::endian::little,
              "the log and snapshot formats are little-endian and written with memcpy");

namespace {

constexpr size_t kHeaderSize = 8;
// A payload larger than this is a corrupt size field, not a record (65536-d vectors are 256 KiB).
constexpr uint32_t kMaxPayload = 64u << 20;

void put_u32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }

uint32_t get_u32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void finish_record(std::string& out, size_t start) {
  const uint32_t payload = static_cast<uint32_t>(out.size() - start - kHeaderSize);
  std::memcpy(out.data() + start, &payload, 4);
  uint32_t crc = crc32(out.data() + start, 4);
  crc = crc32(out.data() + start + kHeaderSize, payload, crc);
  std::memcpy(out.data() + start + 4, &crc, 4);
}

}  // namespace

void encode_upsert(std::string& out, std::string_view id, std::span<const float> vector) {
  const size_t start = out.size();
  out.append(kHeaderSize, '\0');
  out += static_cast<char>(LogOp::kUpsert);
  put_u32(out, static_cast<uint32_t>(id.size()));
  out += id;
  put_u32(out, static_cast<uint32_t>(vector.size()));
  out.append(reinterpret_cast<const char*>(vector.data()), vector.size_bytes());
  finish_record(out, start);
}

void encode_remove(std::string& out, std::string_view id) {
  const size_t start = out.size();
  out.append(kHeaderSize, '\0');
  out += static_cast<char>(LogOp::kRemove);
  put_u32(out, static_cast<uint32_t>(id.size()));
  out += id;
  finish_record(out, start);
}

std::string segment_path(const std::string& dir, uint64_t generation) {
  char name[48];
  std::snprintf(name, sizeof name, "wal-%020llu.log", static_cast<unsigned long long>(generation));
  return dir + "/" + name;
}

std::optional<uint64_t> parse_segment_name(std::string_view name) {
  constexpr std::string_view kPrefix = "wal-";
  constexpr std::string_view kSuffix = ".log";
  if (name.size() != kPrefix.size() + 20 + kSuffix.size() || !name.starts_with(kPrefix) ||
      !name.ends_with(kSuffix)) {
    return std::nullopt;
  }
  uint64_t gen = 0;
  for (char c : name.substr(kPrefix.size(), 20)) {
    if (c < '0' || c > '9') return std::nullopt;
    gen = gen * 10 + static_cast<uint64_t>(c - '0');
  }
  return gen;
}

Result<SegmentScan> scan_segment(const std::string& path, size_t dimension,
                                 const std::function<void(LogRecord&&)>& on_record) {
  std::FILE* f = std::fopen(path.c_str(), "rbe");
  if (f == nullptr) return io_error("cannot open log segment", path, errno);
  struct Closer {
    std::FILE* f;
    ~Closer() { std::fclose(f); }
  } closer{f};
  std::setvbuf(f, nullptr, _IOFBF, 1 << 20);

  SegmentScan scan;
  std::string payload;
  char header[kHeaderSize];
  for (;;) {
    const size_t got = std::fread(header, 1, kHeaderSize, f);
    if (got < kHeaderSize) {
      if (std::ferror(f)) return io_error("read of log segment failed", path, errno);
      break;  // clean end (got == 0) or a torn header
    }
    const uint32_t size = get_u32(header);
    const uint32_t crc = get_u32(header + 4);
    if (size == 0 || size > kMaxPayload) break;
    payload.resize(size);
    if (std::fread(payload.data(), 1, size, f) < size) {
      if (std::ferror(f)) return io_error("read of log segment failed", path, errno);
      break;  // torn payload
    }
    if (crc32(payload.data(), size, crc32(header, 4)) != crc) break;

    // The CRC matched, so from here on a malformed payload is a bug, not a torn write.
    auto corrupt = [&](const char* what) {
      return Error(ErrorCode::kInternal, std::string("log record is malformed: ") + what)
          .with("path", path)
          .with("offset", std::to_string(scan.valid_bytes));
    };
    LogRecord rec;
    const char* p = payload.data();
    const char* end = p + size;
    if (end - p < 5) return corrupt("short header");
    rec.op = static_cast<LogOp>(*p++);
    const uint32_t id_size = get_u32(p);
    p += 4;
    if (static_cast<size_t>(end - p) < id_size) return corrupt("id past the end");
    rec.id.assign(p, id_size);
    p += id_size;
    if (rec.op == LogOp::kUpsert) {
      if (end - p < 4) return corrupt("no dimension");
      const uint32_t dim = get_u32(p);
      p += 4;
      if (dim != dimension) return corrupt("vector dimension differs from the collection's");
      if (static_cast<size_t>(end - p) != size_t{dim} * sizeof(float)) return corrupt("vector size");
      rec.vector.resize(dim);
      std::memcpy(rec.vector.data(), p, size_t{dim} * sizeof(float));
    } else if (rec.op == LogOp::kRemove) {
      if (p != end) return corrupt("trailing bytes after remove");
    } else {
      return corrupt("unknown op");
    }
    on_record(std::move(rec));
    ++scan.records;
    scan.valid_bytes += kHeaderSize + size;
  }
  auto size = file_size(path);
  if (!size.ok()) return std::move(size).error();
  scan.file_bytes = *size;
  return scan;
}

WriteAheadLog::WriteAheadLog(std::string dir, uint64_t generation, int fd, uint64_t size, bool sync)
    : dir_(std::move(dir)),
      sync_(sync),
      generation_(generation),
      path_(segment_path(dir_, generation)),
      fd_(fd),
      file_size_(size) {}

WriteAheadLog::~WriteAheadLog() {
  // No fsync: anything not yet synced was not acknowledged either.
  if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<WriteAheadLog>> WriteAheadLog::open(const std::string& dir,
                                                           uint64_t generation,
                                                           uint64_t valid_bytes, bool sync) {
  const std::string path = segment_path(dir, generation);
  const bool existed = ::access(path.c_str(), F_OK) == 0;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot open log segment", path, errno);
  auto fail = [&](const char* what) {
    const int err = errno;
    ::close(fd);
    return io_error(what, path, err);
  };
  if (existed) {
    if (::ftruncate(fd, static_cast<off_t>(valid_bytes)) != 0) return fail("cannot truncate torn log tail");
  } else {
    valid_bytes = 0;
  }
  if (::lseek(fd, static_cast<off_t>(valid_bytes), SEEK_SET) < 0) return fail("seek in log failed");
  // Whatever survived in the page cache from before the crash becomes durable now, so that
  // nothing recovered (and so visible) can disappear in a later power loss.
  if (sync && ::fdatasync(fd) != 0) return fail("fdatasync of log failed");
  if (!existed) {
    if (Status s = fsync_directory(dir); !s.ok()) {
      ::close(fd);
      return std::move(s).error();
    }
  }
  return std::unique_ptr<WriteAheadLog>(new WriteAheadLog(dir, generation, fd, valid_bytes, sync));
}

Result<uint64_t> WriteAheadLog::append(std::string_view bytes) {
  std::lock_guard lock(mu_);
  if (failed_) return *failed_;
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      // Undo a partial write so no torn record sits in front of later ones.
      if (::ftruncate(fd_, static_cast<off_t>(file_size_)) != 0 ||
          ::lseek(fd_, static_cast<off_t>(file_size_), SEEK_SET) < 0) {
        failed_ = io_error("log write failed and could not be undone; reopen the collection", path_, err);
        return *failed_;
      }
      return io_error("log write failed", path_, err);
    }
    done += static_cast<size_t>(n);
  }
  file_size_ += bytes.size();
  end_lsn_ += bytes.size();
  return end_lsn_;
}

Status WriteAheadLog::sync(uint64_t lsn) {
  std::unique_lock lock(mu_);
  for (;;) {
    if (failed_) return *failed_;
    if (synced_lsn_ >= lsn) return ok_status();
    if (syncing_) {
      synced_cv_.wait(lock);
      continue;
    }
    // Become the leader: one fdatasync covers everything appended so far, including the records
    // of writers that are waiting behind us.
    syncing_ = true;
    const uint64_t target = end_lsn_;
    const int fd = fd_;
    lock.unlock();
    const int rc = sync_ ? ::fdatasync(fd) : 0;
    const int err = errno;
    lock.lock();
    syncing_ = false;
    if (rc != 0) {
      failed_ = io_error("fdatasync of log failed; reopen the collection", path_, err);
    } else if (target > synced_lsn_) {
      synced_lsn_ = target;
    }
    synced_cv_.notify_all();
  }
}

uint64_t WriteAheadLog::end_lsn() const {
  std::lock_guard lock(mu_);
  return end_lsn_;
}

uint64_t WriteAheadLog::generation() const {
  std::lock_guard lock(mu_);
  return generation_;
}

Status WriteAheadLog::rotate(uint64_t new_generation) {
  std::unique_lock lock(mu_);
  synced_cv_.wait(lock, [&] { return !syncing_; });  // the leader holds a copy of fd_
  if (failed_) return *failed_;
  if (sync_ && ::fdatasync(fd_) != 0) {
    failed_ = io_error("fdatasync of log failed; reopen the collection", path_, errno);
    synced_cv_.notify_all();
    return *failed_;
  }
  synced_lsn_ = end_lsn_;
  synced_cv_.notify_all();

  const std::string path = segment_path(dir_, new_generation);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot create log segment", path, errno);
  if (Status s = fsync_directory(dir_); !s.ok()) {
    ::close(fd);
    ::unlink(path.c_str());
    return s;
  }
  ::close(fd_);
  fd_ = fd;
  path_ = path;
  generation_ = new_generation;
  file_size_ = 0;
  return ok_status();
}

}  // namespace deeplens::hnsw
