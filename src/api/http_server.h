// HttpServer: HTTP/1.1 on Boost.Beast/Asio — asynchronous, keep-alive, handler pools apart from the
// I/O threads, limits on header and body size, header/body/idle timeouts, graceful shutdown.
//
// Bodies: requests whose route asks for spooling (multipart uploads) are streamed to a temp file
// under spool_dir and never held in memory; other bodies are read into a string up to
// max_small_body_bytes. A body over its limit is refused with 413 before it is read (when
// Content-Length says so) or as soon as the limit is crossed.
//
// Admission: once a request's headers are in, and before any of its body is read, the admit
// callback decides whether it goes on (and whether its body is spooled). A refused request is
// answered at once with "Connection: close"; its body is never read into memory or stored (what the
// client still sends is discarded for at most a second so that it can read the answer).
// Connections: at most max_connections open at once and max_connections_per_client from one
// address; a connection past either limit is closed as soon as it is accepted.
// Every response carries X-Content-Type-Options: nosniff.
//
// Streams: a handler may keep its connection (HttpResponse::stream): a WebSocket upgrade answered
// 101 becomes a WebSocket (Boost.Beast; text frames only — a binary frame closes with 1003; keep-alive
// pings; at most ws_max_message_bytes per message), a 200 text/event-stream response sends its
// headers and then what the handler sends. Either way each connection has a send queue of at most
// stream_queue_bytes; a client that lets it fill is closed. At shutdown they close (1001).
//
// Shutdown (stop): the acceptor closes, requests in flight finish and are answered with
// "Connection: close", idle keep-alive connections close; then the threads exit.
// Threads: io_threads run the sockets (Asio); each request's handler runs where its Admission says
// (RunOn, http.h): on the handler pool, on the query pool, or inline on the I/O thread. A pool
// holds at most its queue of requests waiting beyond its busy threads; past that a request is
// answered 503 SERVER_BUSY with "Retry-After: 1" without running its handler.
// Thread-safety: start/stop from one thread; the handler is called concurrently from the pools.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "api/http.h"
#include "common/result.h"

namespace deeplens::api {

struct HttpServerOptions {
  std::string listen = "127.0.0.1:8080";  // server.listen; port 0 picks a free port
  int io_threads = 2;                      // server.io_threads: read and write sockets, never block
  int threads = 16;                        // server.threads: the handler pool (handlers block on fsync)
  int queue = 1024;                        // server.queue: requests waiting for a handler thread
  int query_threads = 16;                  // server.query_threads: the pool for searches by image
  int query_queue = 48;                    // server.query_queue: searches by image waiting for one
  int query_nice = 10;                     // their threads' nice: decodes and forwards yield the
                                           // cores to the I/O threads and the handler pool
  uint64_t max_body_bytes = 64ull << 20;   // server.max_body_bytes (uploads, spooled)
  uint64_t max_small_body_bytes = 1 << 20; // JSON bodies
  uint32_t max_header_bytes = 16 << 10;
  int max_connections = 4096;                // server.max_connections
  int max_connections_per_client = 256;      // server.max_connections_per_client
  std::chrono::seconds header_timeout{10};   // server.header_timeout_s
  std::chrono::seconds body_timeout{120};    // server.body_timeout_s
  std::chrono::seconds idle_timeout{60};     // keep-alive
  std::chrono::seconds drain_timeout{20};    // stop() waits this long for requests in flight
  std::filesystem::path spool_dir;           // where spooled bodies go (must exist)
  // Long-lived connections (WebSocket, text/event-stream; see StreamHandler in http.h).
  uint64_t stream_queue_bytes = 4u << 20;       // push.send_queue_bytes: unsent bytes per connection
  uint64_t ws_max_message_bytes = 64u << 10;    // a bigger client frame closes with 1009
  std::chrono::seconds ws_ping_interval{25};    // push.ping_interval_s: ping after this much silence;
                                                // no answer within as long again closes
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(HttpRequest&)>;
  // Decided from the headers (the request has no body yet): refuse with a response, or go on and
  // say whether the body is spooled to a file. The same HttpRequest then reaches the handler.
  using Admit = std::function<Admission(HttpRequest&)>;

  HttpServer(HttpServerOptions options, Handler handler, Admit admit);
  ~HttpServer();

  Status start();
  uint16_t port() const;
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace deeplens::api
