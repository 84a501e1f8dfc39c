#include "api/multipart.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <functional>

namespace deeplens::api {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Value of parameter `key` in a header like: form-data; name="file"; filename="a.jpg"
bool header_param(std::string_view header, std::string_view key, std::string& out) {
  size_t pos = 0;
  while (pos < header.size()) {
    auto semi = header.find(';', pos);
    std::string_view item = trim(header.substr(pos, semi == std::string_view::npos ? std::string_view::npos : semi - pos));
    auto eq = item.find('=');
    if (eq != std::string_view::npos && lower(trim(item.substr(0, eq))) == key) {
      std::string_view v = trim(item.substr(eq + 1));
      if (v.size() >= 2 && v.front() == '"') {
        // Quoted string: backslash escapes; a ';' inside quotes was split above only if the
        // client sent one, which browsers percent-encode.
        std::string s;
        for (size_t i = 1; i + 1 < v.size(); ++i) {
          if (v[i] == '\\' && i + 2 < v.size()) ++i;
          s += v[i];
        }
        out = s;
      } else {
        out = std::string(v);
      }
      return true;
    }
    if (semi == std::string_view::npos) break;
    pos = semi + 1;
  }
  return false;
}

Error bad(const std::string& why) { return Error(ErrorCode::kInvalidArgument, "malformed multipart body: " + why); }

}  // namespace

std::string multipart_boundary(std::string_view content_type) {
  if (lower(content_type).rfind("multipart/form-data", 0) != 0) return {};
  std::string b;
  if (!header_param(content_type, "boundary", b) || b.empty() || b.size() > 200) return {};
  return b;
}

Result<std::unique_ptr<MultipartBody>> MultipartBody::open(const std::filesystem::path& file, std::string_view content_type) {
  const std::string boundary = multipart_boundary(content_type);
  if (boundary.empty()) return bad("Content-Type must be multipart/form-data with a boundary");
  std::unique_ptr<MultipartBody> body(new MultipartBody());
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error(ErrorCode::kIoError, "cannot open spooled body").with("path", file.string());
  struct stat st{};
  ::fstat(fd, &st);
  body->map_size_ = static_cast<size_t>(st.st_size);
  if (body->map_size_ > 0) {
    body->map_ = ::mmap(nullptr, body->map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (body->map_ == MAP_FAILED) {
      body->map_ = nullptr;
      ::close(fd);
      return Error(ErrorCode::kIoError, "cannot map spooled body").with("path", file.string());
    }
    ::madvise(body->map_, body->map_size_, MADV_SEQUENTIAL);
    body->data_ = std::string_view(static_cast<const char*>(body->map_), body->map_size_);
  }
  ::close(fd);
  if (auto s = body->split(boundary); !s) return std::move(s).error();
  return body;
}

Result<std::unique_ptr<MultipartBody>> MultipartBody::parse(std::string text, std::string_view content_type) {
  const std::string boundary = multipart_boundary(content_type);
  if (boundary.empty()) return bad("Content-Type must be multipart/form-data with a boundary");
  std::unique_ptr<MultipartBody> body(new MultipartBody());
  body->owned_ = std::move(text);
  body->data_ = body->owned_;
  if (auto s = body->split(boundary); !s) return std::move(s).error();
  return body;
}

MultipartBody::~MultipartBody() {
  if (map_) ::munmap(map_, map_size_);
}

const MultipartPart* MultipartBody::find(std::string_view name) const {
  for (const auto& p : parts_)
    if (p.name == name) return &p;
  return nullptr;
}

Status MultipartBody::split(std::string_view boundary) {
  const std::string first = "--" + std::string(boundary);
  const std::string delim = "\r\n--" + std::string(boundary);
  std::boyer_moore_horspool_searcher searcher(delim.begin(), delim.end());
  std::string_view d = data_;
  // The body starts with the first delimiter (a preamble before it is allowed and ignored).
  size_t pos;
  if (d.substr(0, first.size()) == first) {
    pos = first.size();
  } else {
    auto it = std::search(d.begin(), d.end(), searcher);
    if (it == d.end()) return bad("no boundary found");
    pos = static_cast<size_t>(it - d.begin()) + delim.size();
  }
  while (true) {
    if (d.substr(pos, 2) == "--") return {};  // closing delimiter
    if (d.substr(pos, 2) != "\r\n") return bad("expected CRLF after boundary");
    pos += 2;
    const auto header_end = d.find("\r\n\r\n", pos);
    if (header_end == std::string_view::npos || header_end - pos > 16384) return bad("part headers not terminated");
    MultipartPart part;
    std::string_view headers = d.substr(pos, header_end - pos);
    size_t hp = 0;
    while (hp <= headers.size()) {
      auto eol = headers.find("\r\n", hp);
      std::string_view line = headers.substr(hp, eol == std::string_view::npos ? std::string_view::npos : eol - hp);
      auto colon = line.find(':');
      if (colon != std::string_view::npos) {
        const std::string name = lower(trim(line.substr(0, colon)));
        const std::string_view value = trim(line.substr(colon + 1));
        if (name == "content-disposition") {
          // A repeated header replaces the earlier one whole (not a filename left from it).
          part.name.clear();
          part.filename.clear();
          header_param(value, "name", part.name);
          part.has_filename = header_param(value, "filename", part.filename);
        } else if (name == "content-type") {
          part.content_type = std::string(value);
        }
      }
      if (eol == std::string_view::npos) break;
      hp = eol + 2;
    }
    const size_t data_start = header_end + 4;
    auto it = std::search(d.begin() + static_cast<long>(data_start), d.end(), searcher);
    if (it == d.end()) return bad("part '" + part.name + "' is not terminated by a boundary (truncated upload?)");
    const size_t data_end = static_cast<size_t>(it - d.begin());
    part.data = d.substr(data_start, data_end - data_start);
    parts_.push_back(std::move(part));
    pos = data_end + delim.size();
  }
}

}  // namespace deeplens::api
