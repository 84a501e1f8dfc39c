#include "vectors/hnsw/durable_file.h"

#include <zlib.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace deeplens::hnsw {
namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes and reports the error (close can report a deferred write error).
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

}  // namespace

uint32_t crc32(const void* data, size_t size, uint32_t crc) {
  // zlib's CRC-32 (the same polynomial and chaining as before: existing logs and snapshots verify).
  return static_cast<uint32_t>(::crc32_z(crc, static_cast<const Bytef*>(data), size));
}

Error io_error(std::string_view what, const std::string& path, int err) {
  return Error(ErrorCode::kIoError, std::string(what) + ": " + std::strerror(err))
      .with("path", path)
      .with("errno", std::to_string(err));
}

Status fsync_directory(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return io_error("cannot open directory to fsync it", dir, errno);
  if (::fsync(fd.get()) != 0) return io_error("fsync of directory failed", dir, errno);
  return ok_status();
}

Status fsync_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return io_error("cannot open file to fsync it", path, errno);
  if (::fsync(fd.get()) != 0) return io_error("fsync failed", path, errno);
  return ok_status();
}

Status write_file_atomically(const std::string& path, std::string_view contents) {
  const std::string tmp = path + ".tmp";
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0) return io_error("cannot create file", tmp, errno);
    size_t done = 0;
    while (done < contents.size()) {
      const ssize_t n = ::write(fd.get(), contents.data() + done, contents.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return io_error("write failed", tmp, errno);
      }
      done += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0) return io_error("fsync failed", tmp, errno);
    if (fd.close() != 0) return io_error("close failed", tmp, errno);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return io_error("rename failed", path, errno);
  return fsync_directory(std::filesystem::path(path).parent_path().string());
}

Result<std::string> read_whole_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return Error(ErrorCode::kNotFound, "file does not exist").with("path", path);
    return io_error("cannot open file", path, errno);
  }
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("read failed", path, errno);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Status create_directories_durably(const std::string& dir) {
  std::error_code ec;
  const std::filesystem::path p(dir);
  if (std::filesystem::is_directory(p, ec)) return ok_status();
  if (p.has_parent_path() && p.parent_path() != p) {
    if (Status s = create_directories_durably(p.parent_path().string()); !s.ok()) return s;
  }
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return io_error("cannot create directory", dir, errno);
  }
  const std::string parent = p.has_parent_path() ? p.parent_path().string() : std::string(".");
  return fsync_directory(parent.empty() ? "." : parent);
}

Result<uint64_t> file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Error(ErrorCode::kNotFound, "file does not exist").with("path", path);
    return io_error("stat failed", path, errno);
  }
  return static_cast<uint64_t>(st.st_size);
}

Status remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return io_error("cannot remove file", path, errno);
  return ok_status();
}

}  // namespace deeplens::hnsw
