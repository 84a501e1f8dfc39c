#include "blob/local/local_blob_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

namespace deeplens {
namespace fs = std::filesystem;

namespace {

Error io_error(const std::string& what, const fs::path& path, int err) {
  return Error(ErrorCode::kIoError, what + ": " + std::strerror(err)).with("path", path.string()).with("errno", std::to_string(err));
}

Status fsync_path(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return io_error("open for fsync", path, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return io_error("fsync", path, err);
  return {};
}

// Creates missing directories below root and fsyncs each new one's parent so the entry is durable.
Status make_dirs_durable(const fs::path& dir) {
  if (fs::exists(dir)) return {};
  if (auto st = make_dirs_durable(dir.parent_path()); !st) return st;
  std::error_code ec;
  fs::create_directory(dir, ec);
  if (ec && !fs::exists(dir)) return io_error("mkdir", dir, ec.value());
  return fsync_path(dir.parent_path(), true);
}

Status write_all(int fd, std::span<const uint8_t> bytes, const fs::path& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("write", path, errno);
    }
    done += static_cast<size_t>(n);
  }
  return {};
}

class LocalBlobWriter final : public BlobWriter {
 public:
  LocalBlobWriter(const LocalBlobStore& store, fs::path temp, int fd) : store_(store), temp_(std::move(temp)), fd_(fd) {}
  ~LocalBlobWriter() override {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) {
      std::error_code ec;
      fs::remove(temp_, ec);
    }
  }
  Status write(std::span<const uint8_t> bytes) override {
    if (auto st = write_all(fd_, bytes, temp_); !st) return st;
    size_ += static_cast<int64_t>(bytes.size());
    return {};
  }
  int64_t size() const override { return size_; }
  const fs::path& temp_path() const override { return temp_; }
  Status commit(const std::string& key) override {
    auto target = store_.path_for(key);
    if (!target) return std::move(target).error();
    if (::fsync(fd_) != 0) return io_error("fsync", temp_, errno);
    ::close(fd_);
    fd_ = -1;
    if (auto st = make_dirs_durable(target->parent_path()); !st) return st;
    std::error_code ec;
    fs::rename(temp_, *target, ec);
    if (ec) return io_error("rename", *target, ec.value());
    committed_ = true;
    return fsync_path(target->parent_path(), true);
  }

 private:
  const LocalBlobStore& store_;
  fs::path temp_;
  int fd_;
  int64_t size_ = 0;
  bool committed_ = false;
};

bool valid_key(const std::string& key) {
  if (key.empty() || key.front() == '/' || key.size() > 512) return false;
  for (char c : key)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' || c == '/')) return false;
  size_t start = 0;
  while (start <= key.size()) {
    const auto slash = key.find('/', start);
    const std::string part = key.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return true;
}

}  // namespace

Result<std::unique_ptr<LocalBlobStore>> LocalBlobStore::open(const fs::path& root, RandomSource& random) {
  std::error_code ec;
  fs::create_directories(root / ".tmp", ec);
  if (ec) return io_error("create blob root", root, ec.value());
  // Temp files are uploads that never committed (crash or abort): nothing refers to them. Only
  // old ones go: another process (a running server) may be writing fresh ones right now.
  const auto cutoff = fs::file_time_type::clock::now() - std::chrono::hours(1);
  for (const auto& entry : fs::directory_iterator(root / ".tmp", ec))
    if (entry.last_write_time(ec) < cutoff) fs::remove(entry.path(), ec);
  return std::unique_ptr<LocalBlobStore>(new LocalBlobStore(fs::absolute(root), random));
}

Result<std::vector<BlobEntry>> LocalBlobStore::list(const std::string& prefix) {
  std::vector<BlobEntry> out;
  std::error_code ec;
  const std::string root = root_.string() + "/";
  for (auto it = fs::recursive_directory_iterator(root_, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->path().filename() == ".tmp") {
      it.disable_recursion_pending();  // writes in progress
      continue;
    }
    std::error_code entry_ec;
    if (!it->is_regular_file(entry_ec)) continue;
    std::string key = it->path().string().substr(root.size());
    if (key.rfind(prefix, 0) != 0) continue;
    const auto written = it->last_write_time(entry_ec);
    if (entry_ec) continue;  // removed meanwhile
    const auto wall = std::chrono::file_clock::to_sys(written);
    out.push_back(BlobEntry{std::move(key), std::chrono::time_point_cast<std::chrono::milliseconds>(wall)});
  }
  if (ec) return io_error("list", root_, ec.value());
  return out;
}

Result<fs::path> LocalBlobStore::path_for(const std::string& key) const {
  if (!valid_key(key)) return Error(ErrorCode::kInvalidArgument, "invalid blob key").with("key", key);
  return root_ / key;
}

Result<std::unique_ptr<BlobWriter>> LocalBlobStore::begin_write() {
  const fs::path temp = root_ / ".tmp" / (ids_.uuid_v4() + ".part");
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("create temp blob", temp, errno);
  return std::unique_ptr<BlobWriter>(new LocalBlobWriter(*this, temp, fd));
}

Status LocalBlobStore::put(const std::string& key, std::span<const uint8_t> bytes) {
  auto writer = begin_write();
  if (!writer) return std::move(writer).error();
  if (auto st = (*writer)->write(bytes); !st) return st;
  return (*writer)->commit(key);
}

Result<std::string> LocalBlobStore::read(const std::string& key) {
  auto path = path_for(key);
  if (!path) return std::move(path).error();
  const int fd = ::open(path->c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Error(ErrorCode::kNotFound, "blob not found").with("key", key);
    return io_error("open blob", *path, errno);
  }
  std::string out;
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return io_error("read blob", *path, err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

Status LocalBlobStore::remove(const std::string& key) {
  auto path = path_for(key);
  if (!path) return std::move(path).error();
  std::error_code ec;
  fs::remove(*path, ec);
  if (ec) return io_error("remove blob", *path, ec.value());
  return {};
}

bool LocalBlobStore::exists(const std::string& key) {
  auto path = path_for(key);
  return path && fs::exists(*path);
}

std::string LocalBlobStore::file_path(const std::string& key) const { return (root_ / key).string(); }

Status LocalBlobStore::ping() {
  std::error_code ec;
  if (!fs::is_directory(root_ / ".tmp", ec)) return io_error("blob root missing", root_, ENOENT);
  return {};
}

}  // namespace deeplens
