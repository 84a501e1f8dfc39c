// multipart/form-data (RFC 7578) over a spooled request body. The file is memory-mapped, so a
// large upload is read by the kernel page by page and never copied whole onto the heap; parts
// are string_views into the mapping, valid while the MultipartBody lives.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace deeplens::api {

struct MultipartPart {
  std::string name;          // form field name
  std::string filename;      // as sent by the client (never trusted for paths)
  bool has_filename = false;
  std::string content_type;  // as sent by the client (never trusted for the format)
  std::string_view data;
};

class MultipartBody {
 public:
  // content_type is the request's Content-Type header (must carry a boundary).
  static Result<std::unique_ptr<MultipartBody>> open(const std::filesystem::path& file, std::string_view content_type);
  // Parses a body held in memory (tests, small bodies).
  static Result<std::unique_ptr<MultipartBody>> parse(std::string body, std::string_view content_type);
  ~MultipartBody();

  const std::vector<MultipartPart>& parts() const { return parts_; }
  const MultipartPart* find(std::string_view name) const;

 private:
  MultipartBody() = default;
  Status split(std::string_view boundary);

  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::string owned_;
  std::string_view data_;
  std::vector<MultipartPart> parts_;
};

// The boundary parameter of a multipart Content-Type, or "" when absent / not multipart.
std::string multipart_boundary(std::string_view content_type);

}  // namespace deeplens::api
