// HttpClient: blocking outgoing HTTP/1.1 requests over libcurl, for the clients of other services
// (the remote extractor, Azure Blob Storage). Idle curl handles are pooled, so connections are kept
// alive between requests.
//
// An HTTP status is never an error here: any answer comes back as an ClientResponse and the caller
// decides. Errors are transport failures only: kTimeout when `timeout` passed, kUnavailable when
// the connection could not be made or broke, kResourceExhausted when the answer is larger than
// max_body, kCancelled when the sink asked to stop. The error names the URL without its query.
//
// curl adds no headers of its own beyond Host, Content-Length and User-Agent ("Expect" and a
// default Content-Type are suppressed), so what a caller signs is what goes out.
//
// Thread-safety: perform() may be called from any number of threads at once.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace deeplens {

struct ClientResponse;

struct ClientRequest {
  std::string method = "GET";  // GET, HEAD, PUT, POST, DELETE
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string_view body;  // sent as is (PUT/POST); must outlive perform()
  std::chrono::milliseconds timeout{30000};          // connect to last byte
  std::chrono::milliseconds connect_timeout{5000};
  size_t max_body = size_t{64} << 20;  // larger answers fail with kResourceExhausted
  // When set, the answer's body goes here piece by piece instead of into ClientResponse::body, with
  // the status and headers already received (`head`); returning false stops the transfer
  // (kCancelled).
  std::function<bool(const ClientResponse& head, std::string_view piece)> sink;
};

struct ClientResponse {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased, values trimmed
  std::string body;
  size_t body_bytes = 0;  // received, also when a sink took them

  // The first header with this (lowercase) name, or nullptr.
  const std::string* header(std::string_view name) const;
};

class HttpClient {
 public:
  HttpClient();
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  Result<ClientResponse> perform(const ClientRequest& request);

 private:
  struct Pool;
  std::unique_ptr<Pool> pool_;
};

// "scheme://host[:port]/path" of a URL, without query or fragment (for messages and logs).
std::string url_without_query(std::string_view url);

}  // namespace deeplens
