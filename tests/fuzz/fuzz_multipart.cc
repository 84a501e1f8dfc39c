// Fuzzes the multipart/form-data parser (api/multipart.h). Input: the request's Content-Type value,
// a '\n', then the body ("multipart/form-data; boundary=XYZ\n--XYZ\r\n...").
// Invariants:
//  - parse (from memory) and open (the same bytes spooled to a file and memory-mapped, as the
//    server does) agree: both fail, or both give the same parts;
//  - parts lie inside the body, in order, without overlapping; no part's data contains the
//    delimiter; every byte of every part is readable (ASan checks the reads);
//  - what parses re-serialises to a canonical body that parses to the same parts (when the names,
//    file names and content types are representable in a header: no CR, LF or ';').
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "api/multipart.h"
#include "fuzz_check.h"

namespace {

using deeplens::api::MultipartBody;
using deeplens::api::MultipartPart;

// One spool file per process, rewritten for each input (the server spools every upload).
const std::filesystem::path& spool_file() {
  static const std::filesystem::path path = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "fuzz_multipart-XXXXXX").string();
    const int fd = ::mkstemp(tmpl.data());
    if (fd < 0) std::abort();
    ::close(fd);
    std::atexit([] { std::filesystem::remove(spool_file()); });
    return std::filesystem::path(tmpl);
  }();
  return path;
}

void spool(std::string_view body) {
  std::ofstream out(spool_file(), std::ios::binary | std::ios::trunc);
  out.write(body.data(), static_cast<std::streamsize>(body.size()));
  if (!out.good()) std::abort();
}

bool same_parts(const MultipartBody& a, const MultipartBody& b) {
  if (a.parts().size() != b.parts().size()) return false;
  for (size_t i = 0; i < a.parts().size(); ++i) {
    const MultipartPart& x = a.parts()[i];
    const MultipartPart& y = b.parts()[i];
    if (x.name != y.name || x.filename != y.filename || x.has_filename != y.has_filename ||
        x.content_type != y.content_type || x.data != y.data)
      return false;
  }
  return true;
}

bool header_safe(std::string_view s) { return s.find_first_of("\r\n;") == std::string_view::npos; }

std::string quoted_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// A body the way a browser writes one, from parsed parts; "" when a part cannot be written back
// unchanged (a header value with CR/LF/';', which the parser splits on, or a content type with
// edge whitespace, which it trims).
std::string canonical_body(const MultipartBody& body, std::string_view boundary) {
  std::string out;
  for (const auto& p : body.parts()) {
    if (!header_safe(p.name) || !header_safe(p.filename) || !header_safe(p.content_type)) return "";
    if (!p.content_type.empty() && p.content_type.find_first_of(" \t") == 0) return "";
    if (!p.content_type.empty() && std::string_view(" \t").find(p.content_type.back()) != std::string_view::npos)
      return "";
    out += "--" + std::string(boundary) + "\r\nContent-Disposition: form-data; name=" + quoted_string(p.name);
    if (p.has_filename) out += "; filename=" + quoted_string(p.filename);
    out += "\r\n";
    if (!p.content_type.empty()) out += "Content-Type: " + p.content_type + "\r\n";
    out += "\r\n";
    out += p.data;
    out += "\r\n";
  }
  return out + "--" + std::string(boundary) + "--\r\n";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nl = input.find('\n');
  if (nl == std::string_view::npos) return 0;
  const std::string_view content_type = input.substr(0, nl);
  const std::string_view text = input.substr(nl + 1);
  const std::string boundary = deeplens::api::multipart_boundary(content_type);

  auto parsed = MultipartBody::parse(std::string(text), content_type);
  spool(text);
  auto mapped = MultipartBody::open(spool_file(), content_type);
  FUZZ_CHECK(parsed.ok() == mapped.ok(), "parse and open disagree on success");
  if (!parsed) {
    FUZZ_CHECK(parsed.error().code == deeplens::ErrorCode::kInvalidArgument, parsed.error().to_string().c_str());
    return 0;
  }
  FUZZ_CHECK(!boundary.empty(), "a body parsed without a boundary");
  FUZZ_CHECK(same_parts(**parsed, **mapped), "parse and open give different parts");

  const std::string delim = "\r\n--" + boundary;
  const char* previous_end = nullptr;
  const char* first = nullptr;
  uint64_t checksum = 0;
  for (const auto& p : (*parsed)->parts()) {
    if (!first) first = p.data.data();
    FUZZ_CHECK(previous_end == nullptr || p.data.data() >= previous_end, "parts overlap or are out of order");
    previous_end = p.data.data() + p.data.size();
    FUZZ_CHECK(static_cast<size_t>(previous_end - first) <= text.size(), "a part reaches past the body");
    FUZZ_CHECK(p.data.find(delim) == std::string_view::npos, "a part's data holds the delimiter");
    for (char c : p.data) checksum += static_cast<unsigned char>(c);
    FUZZ_CHECK((*parsed)->find(p.name) != nullptr, "find() misses a part's name");
  }
  (void)checksum;

  // Boundaries with CR or LF can overlap their own delimiter; skip the round-trip for those.
  if (boundary.find_first_of("\r\n") != std::string::npos) return 0;
  const std::string canon = canonical_body(**parsed, boundary);
  if (canon.empty()) return 0;
  auto reparsed = MultipartBody::parse(canon, "multipart/form-data; boundary=" + quoted_string(boundary));
  FUZZ_CHECK(reparsed, (reparsed ? "" : ("canonical body does not parse: " + reparsed.error().to_string()).c_str()));
  FUZZ_CHECK(same_parts(**parsed, **reparsed), ("canonical body parses to different parts:\n" + canon).c_str());
  return 0;
}
