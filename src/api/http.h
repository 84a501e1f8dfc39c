// The HTTP types the routes see: no Beast in this header, so route code stays light to compile.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace deeplens::api {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // raw target, "/api/v1/images?limit=10"
  std::string path;    // decoded path without query
  std::map<std::string, std::string> query;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;                  // small bodies (JSON)
  std::filesystem::path body_file;   // large bodies (multipart uploads) are spooled to disk
  std::map<std::string, std::string> params;  // path parameters, e.g. {"id": "img_..."}
  std::string tenant_id;             // set by authentication
  std::string api_key_id;            // the key that authenticated the request
  std::string client_address;        // the peer's IP address
  bool admitted = false;             // authentication and limits already passed (from the headers)

  std::string header(std::string_view name) const;  // name in lower case; "" when absent
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// What the server does with a request whose headers are in and whose body is not read yet:
// refuse it with a response, or go on and say whether the body is spooled to a file.
struct Admission {
  std::optional<HttpResponse> refusal;
  bool spool = false;
};

// {"error":{"code":"...","message":"...","details":{...}}}
HttpResponse error_response(int status, const std::string& code, const std::string& message,
                            const std::map<std::string, std::string>& details = {});
HttpResponse json_response(int status, std::string body);

// Percent-decoding of a path or query component ('+' as space only in queries).
std::string url_decode(std::string_view text, bool plus_as_space);
std::map<std::string, std::string> parse_query(std::string_view query);

}  // namespace deeplens::api
