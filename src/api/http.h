// The HTTP types the routes see: no Beast in this header, so route code stays light to compile.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
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

// The server's side of a long-lived connection (a WebSocket, or a text/event-stream response).
// Thread-safe: any thread may send or close.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  // Queues a text frame (WebSocket) or bytes of the event stream (SSE), sent in call order. False
  // when the connection is closed or closing — also when this frame would take the send queue past
  // its limit: a client that does not read is closed (WebSocket code 1008), never buffered without
  // bound.
  virtual bool send(std::string data) = 0;
  // Closes (WebSocket: with this close code and reason) after what is queued.
  virtual void close(uint16_t code, std::string reason) = 0;
  // Runs fn on the connection's strand after delay, unless the connection closed first.
  virtual void after(std::chrono::milliseconds delay, std::function<void()> fn) = 0;
};

// What a handler that keeps its connection implements. The server calls on_open once (with the
// sink), on_message for each text frame (WebSocket only), on_close once when the connection ends
// for any reason; all three on the connection's strand, never concurrently.
class StreamHandler {
 public:
  virtual ~StreamHandler() = default;
  virtual void on_open(std::shared_ptr<StreamSink> sink) = 0;
  virtual void on_message(std::string_view text) = 0;
  virtual void on_close() = 0;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Set to keep the connection: with status 101 the request (a WebSocket upgrade) is accepted as
  // a WebSocket; with 200 and text/event-stream the headers are sent and the body is what the
  // handler sends, until either side closes.
  std::shared_ptr<StreamHandler> stream;
};

// Where a request's handler runs (HttpServer). The I/O threads only read and write sockets; a
// handler that may block (fsync, a database round trip, a model forward) runs on a pool, so a slow
// request never holds up a fast one:
//   kPool     the handler pool (server.threads) — the default
//   kQueries  the pool kept for searches by image (server.query_threads), so that model forwards
//             never take the threads every other request needs
//   kInline   the I/O thread that read the request: only handlers that never block (/healthz,
//             /metrics, the web UI's files)
// A pool whose queue is full answers 503 SERVER_BUSY with Retry-After instead of queueing more.
enum class RunOn { kPool, kQueries, kInline };

// What the server does with a request whose headers are in and whose body is not read yet:
// refuse it with a response, or go on and say whether the body is spooled to a file and where its
// handler runs.
struct Admission {
  std::optional<HttpResponse> refusal;
  bool spool = false;
  RunOn run_on = RunOn::kPool;
};

// {"error":{"code":"...","message":"...","details":{...}}}
HttpResponse error_response(int status, const std::string& code, const std::string& message,
                            const std::map<std::string, std::string>& details = {});
HttpResponse json_response(int status, std::string body);
// The `limit` query parameter: an integer from 1 to max, fallback when absent; otherwise the 400.
std::variant<int, HttpResponse> query_limit(const HttpRequest& req, int fallback, int max);

// Percent-decoding of a path or query component ('+' as space only in queries).
std::string url_decode(std::string_view text, bool plus_as_space);
std::map<std::string, std::string> parse_query(std::string_view query);

}  // namespace deeplens::api
