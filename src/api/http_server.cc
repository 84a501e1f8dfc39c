#include "api/http_server.h"

#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <atomic>
#include <deque>
#include <functional>
#include <limits>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "common/log.h"

namespace deeplens::api {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

// A long-lived connection: the send queue (bounded in bytes), timers, closing and the handler's
// lifecycle, shared by the WebSocket and the event-stream transports. Everything but send, close
// and after runs on the connection's strand.
class StreamConn : public StreamSink, public std::enable_shared_from_this<StreamConn> {
 public:
  StreamConn(net::any_io_executor strand, std::shared_ptr<StreamHandler> handler, uint64_t queue_limit,
             std::shared_ptr<void> keep)
      : strand_(std::move(strand)), handler_(std::move(handler)), queue_limit_(queue_limit), keep_(std::move(keep)) {}

  bool send(std::string data) override {
    std::lock_guard lock(mu_);
    if (closing_) return false;
    if (queued_bytes_ + data.size() > queue_limit_) {
      // The client is not reading: close rather than buffer without bound.
      closing_ = true;
      net::post(strand_, [self = shared_from_this()] { self->overflow(); });
      return false;
    }
    queued_bytes_ += data.size();
    queue_.push_back(std::move(data));
    if (!writing_) {
      writing_ = true;
      net::post(strand_, [self = shared_from_this()] { self->write_next(); });
    }
    return true;
  }

  void close(uint16_t code, std::string reason) override {
    {
      std::lock_guard lock(mu_);
      if (closing_) return;
      closing_ = true;
    }
    net::post(strand_, [self = shared_from_this(), code, reason = std::move(reason)]() mutable {
      self->close_code_ = code;
      self->close_reason_ = std::move(reason);
      self->close_requested_ = true;
      std::lock_guard lock(self->mu_);
      if (!self->writing_) self->begin_close_locked();
    });
  }

  void after(std::chrono::milliseconds delay, std::function<void()> fn) override {
    net::post(strand_, [self = shared_from_this(), delay, fn = std::move(fn)]() mutable {
      if (self->finished_) return;
      auto timer = std::make_shared<net::steady_timer>(self->strand_, delay);
      self->timers_.push_back(timer);
      timer->async_wait([self, timer, fn = std::move(fn)](beast::error_code ec) {
        std::erase(self->timers_, timer);
        if (!ec && !self->finished_) fn();
      });
    });
  }

 protected:
  // Transport: write one queued item (call done when written), begin a graceful close, close now.
  virtual void write(const std::string& data, std::function<void(beast::error_code)> done) = 0;
  virtual void graceful_close(uint16_t code, const std::string& reason, std::function<void()> done) = 0;
  virtual void hard_close() = 0;

  void opened() { handler_->on_open(shared_from_this()); }

  // Ends the connection once: tells the handler, cancels timers, drops the socket.
  void finish() {
    if (finished_) return;
    finished_ = true;
    {
      std::lock_guard lock(mu_);
      closing_ = true;
      queue_.clear();
      queued_bytes_ = 0;
    }
    for (auto& t : timers_) t->cancel();
    timers_.clear();
    hard_close();
    handler_->on_close();
    handler_.reset();
    keep_.reset();
  }

  StreamHandler* handler() { return handler_.get(); }
  bool finished() const { return finished_; }

 private:
  void write_next() {
    const std::string* front = nullptr;
    {
      std::lock_guard lock(mu_);
      if (finished_) return;
      if (queue_.empty()) {
        writing_ = false;
        if (close_requested_) begin_close_locked();
        return;
      }
      front = &queue_.front();  // deque: pushing at the back keeps this reference valid
    }
    write(*front, [self = shared_from_this()](beast::error_code ec) {
      {
        std::lock_guard lock(self->mu_);
        if (!self->queue_.empty()) {
          self->queued_bytes_ -= self->queue_.front().size();
          self->queue_.pop_front();
        }
      }
      if (ec) return self->finish();
      self->write_next();
    });
  }

  void begin_close_locked() {  // strand, mu_ held
    if (close_started_) return;
    close_started_ = true;
    net::post(strand_, [self = shared_from_this()] {
      self->graceful_close(self->close_code_, self->close_reason_, [self] { self->finish(); });
      self->arm_hard_close(std::chrono::seconds(2));
    });
  }

  void overflow() {
    close_code_ = 1008;
    close_reason_ = "send queue full: the client does not read";
    close_requested_ = true;
    std::lock_guard lock(mu_);
    close_started_ = true;
    // The pipe is full, so a close frame may never get out: try, and cut the connection soon.
    net::post(strand_, [self = shared_from_this()] {
      self->graceful_close(self->close_code_, self->close_reason_, [self] { self->finish(); });
      self->arm_hard_close(std::chrono::milliseconds(200));
    });
  }

  void arm_hard_close(std::chrono::milliseconds after) {
    auto timer = std::make_shared<net::steady_timer>(strand_, after);
    timers_.push_back(timer);
    timer->async_wait([self = shared_from_this(), timer](beast::error_code ec) {
      if (!ec) self->finish();
    });
  }

  net::any_io_executor strand_;
  std::shared_ptr<StreamHandler> handler_;
  const uint64_t queue_limit_;
  std::shared_ptr<void> keep_;  // the HTTP session: its connection stays counted while we live
  std::mutex mu_;
  std::deque<std::string> queue_;  // guarded by mu_
  uint64_t queued_bytes_ = 0;      // guarded by mu_
  bool writing_ = false;           // guarded by mu_
  bool closing_ = false;           // guarded by mu_: no more sends
  bool close_requested_ = false;
  bool close_started_ = false;
  bool finished_ = false;
  uint16_t close_code_ = 1000;
  std::string close_reason_;
  std::vector<std::shared_ptr<net::steady_timer>> timers_;
};

class WebSocketConn final : public StreamConn {
 public:
  WebSocketConn(tcp::socket socket, std::shared_ptr<StreamHandler> handler, const HttpServerOptions& o,
                std::shared_ptr<void> keep)
      : StreamConn(socket.get_executor(), std::move(handler), o.stream_queue_bytes, std::move(keep)),
        ws_(std::move(socket)) {
    ws_.read_message_max(o.ws_max_message_bytes);
    websocket::stream_base::timeout t;
    t.handshake_timeout = std::chrono::seconds(10);
    t.idle_timeout = 2 * o.ws_ping_interval;  // a ping after half of it in silence
    t.keep_alive_pings = true;
    ws_.set_option(t);
    ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& r) {
      r.set(http::field::server, "deeplens");
      r.set("X-Content-Type-Options", "nosniff");
    }));
  }

  void start(const http::request<http::empty_body>& req) {
    ws_.async_accept(req, [self = std::static_pointer_cast<WebSocketConn>(shared_from_this())](beast::error_code ec) {
      if (ec) return self->finish();
      self->opened();
      self->read();
    });
  }

 protected:
  void write(const std::string& data, std::function<void(beast::error_code)> done) override {
    ws_.text(true);
    ws_.async_write(net::buffer(data), [done = std::move(done)](beast::error_code ec, size_t) { done(ec); });
  }
  void graceful_close(uint16_t code, const std::string& reason, std::function<void()> done) override {
    if (!ws_.is_open()) return done();
    ws_.async_close(websocket::close_reason(static_cast<websocket::close_code>(code), reason), [done = std::move(done)](beast::error_code) { done(); });
  }
  void hard_close() override {
    beast::error_code ec;
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ec);
    beast::get_lowest_layer(ws_).socket().close(ec);
  }

 private:
  void read() {
    ws_.async_read(in_, [self = std::static_pointer_cast<WebSocketConn>(shared_from_this())](beast::error_code ec, size_t) {
      if (ec || self->finished()) return self->finish();  // closed, timed out, or too big (Beast sent 1009)
      if (!self->ws_.got_text()) {
        self->in_.consume(self->in_.size());
        self->close(1003, "binary frames are not supported");
        return self->read();
      }
      std::string text = beast::buffers_to_string(self->in_.data());
      self->in_.consume(self->in_.size());
      if (auto* h = self->handler()) h->on_message(text);
      self->read();
    });
  }

  websocket::stream<beast::tcp_stream> ws_;
  beast::flat_buffer in_;
};

class EventStreamConn final : public StreamConn {
 public:
  EventStreamConn(tcp::socket socket, std::shared_ptr<StreamHandler> handler, const HttpServerOptions& o,
                  std::shared_ptr<void> keep)
      : StreamConn(socket.get_executor(), std::move(handler), o.stream_queue_bytes, std::move(keep)),
        socket_(std::move(socket)) {}

  void start(std::string head) {
    opened_head_ = std::move(head);
    auto self = std::static_pointer_cast<EventStreamConn>(shared_from_this());
    net::async_write(socket_, net::buffer(opened_head_), [self](beast::error_code ec, size_t) {
      if (ec) return self->finish();
      self->opened();
      self->read();
    });
  }

 protected:
  void write(const std::string& data, std::function<void(beast::error_code)> done) override {
    net::async_write(socket_, net::buffer(data), [done = std::move(done)](beast::error_code ec, size_t) { done(ec); });
  }
  void graceful_close(uint16_t, const std::string&, std::function<void()> done) override {
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    done();
  }
  void hard_close() override {
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
  }

 private:
  // The client sends nothing after its request; reading tells us when it goes away.
  void read() {
    socket_.async_read_some(net::buffer(discard_), [self = std::static_pointer_cast<EventStreamConn>(shared_from_this())](
                                                        beast::error_code ec, size_t) {
      if (ec || self->finished()) return self->finish();
      self->read();
    });
  }

  tcp::socket socket_;
  std::string opened_head_;
  std::array<char, 512> discard_{};
};

// A handler pool: its threads and a bound on the requests waiting for them.
class HandlerPool {
 public:
  // nice: added to the scheduling priority of the pool's threads (Linux: per thread), so that
  // CPU-heavy handlers yield the cores to the I/O threads and the other pool.
  HandlerPool(int threads, int queue, int nice = 0)
      : pool_(static_cast<size_t>(std::max(1, threads))), limit_(std::max(1, threads) + std::max(0, queue)), nice_(nice) {}
  // Runs fn on the pool, unless as many requests as its threads and queue hold are already there.
  bool try_post(std::function<void()> fn) {
    if (pending_.fetch_add(1) >= limit_) {
      pending_.fetch_sub(1);
      return false;
    }
    net::post(pool_, [this, fn = std::move(fn)] {
      if (nice_ != 0) {
        thread_local bool niced = false;  // each pool thread runs only this pool's work
        if (!niced) (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), nice_);
        niced = true;
      }
      fn();
      pending_.fetch_sub(1);
    });
    return true;
  }
  // Waits for what was posted to finish.
  void join() { pool_.join(); }

 private:
  net::thread_pool pool_;
  std::atomic<int> pending_{0};
  const int limit_;
  const int nice_;
};

HttpResponse server_busy() {
  HttpResponse res = error_response(503, "SERVER_BUSY", "the server is busy with as many requests of this kind as it queues; retry shortly");
  res.headers.emplace_back("Retry-After", "1");
  return res;
}

}  // namespace

struct HttpServer::Impl {
  HttpServerOptions options;
  Handler handler;
  Admit admit;
  // Declared before ioc so that they outlive it: destroying ioc destroys the handlers that still
  // own Sessions, and a Session's destructor releases its connection here.
  class Session;
  std::mutex sessions_mu;
  std::list<std::weak_ptr<Session>> sessions;
  int open_connections = 0;                          // guarded by sessions_mu
  std::map<std::string, int> connections_by_client;  // guarded by sessions_mu
  net::io_context ioc;
  std::optional<tcp::acceptor> acceptor;
  std::vector<std::thread> threads;  // the I/O threads
  // After ioc: destroyed first, so a handler still running can post its response to ioc.
  std::optional<HandlerPool> pool;          // RunOn::kPool
  std::optional<HandlerPool> query_pool;    // RunOn::kQueries
  std::atomic<bool> draining{false};
  std::atomic<int> in_flight{0};
  std::atomic<uint64_t> spool_seq{0};  // names spool files uniquely within the process
  uint16_t bound_port = 0;

  // Counts a new connection from client; false (and nothing counted) past a limit.
  bool admit_connection(const std::string& client) {
    std::lock_guard lock(sessions_mu);
    int& n = connections_by_client[client];
    if (open_connections >= options.max_connections || n >= options.max_connections_per_client) {
      if (n == 0) connections_by_client.erase(client);
      return false;
    }
    ++n;
    ++open_connections;
    return true;
  }
  void release_connection(const std::string& client) {
    std::lock_guard lock(sessions_mu);
    --open_connections;
    auto it = connections_by_client.find(client);
    if (it != connections_by_client.end() && --it->second <= 0) connections_by_client.erase(it);
  }

  void do_accept();
};

class HttpServer::Impl::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Impl& server, tcp::socket socket, std::string client)
      : server_(server), stream_(std::move(socket)), client_(std::move(client)) {}
  ~Session() { server_.release_connection(client_); }

  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_header(); });
  }

  // Called at shutdown: an idle connection closes now, a busy one after its response.
  void close_if_idle() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (auto conn = self->stream_conn_.lock()) return conn->close(1001, "server shutting down");
      if (self->streaming_) return;
      if (!self->busy_) self->close();
    });
  }

 private:
  void read_header() {
    if (server_.draining) return close();
    header_.emplace();
    header_->header_limit(server_.options.max_header_bytes);
    header_->body_limit(std::numeric_limits<std::uint64_t>::max());  // checked per route in on_header
    stream_.expires_after(buffer_.size() > 0 ? server_.options.header_timeout : server_.options.idle_timeout);
    http::async_read_header(stream_, buffer_, *header_,
                            [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) {
      if (ec == http::error::header_limit) {
        busy_ = true;
        return respond(error_response(431, "HEADERS_TOO_LARGE", "request headers exceed the limit"), false);
      }
      return close();  // end of stream, timeout, garbage: nothing to answer
    }
    busy_ = true;
    ++server_.in_flight;
    counted_ = true;
    auto& msg = header_->get();
    keep_alive_ = msg.keep_alive();
    request_ = HttpRequest{};
    request_.method = std::string(msg.method_string());
    request_.target = std::string(msg.target());
    const auto q = request_.target.find('?');
    request_.path = url_decode(std::string_view(request_.target).substr(0, q), false);
    if (q != std::string::npos) request_.query = parse_query(std::string_view(request_.target).substr(q + 1));
    copy_headers(msg, request_);
    request_.client_address = client_;
    Admission admission;
    if (server_.admit) {
      try {
        admission = server_.admit(request_);
      } catch (const std::exception& e) {
        log_error("http.admit_exception", {{"path", request_.path}, {"error", e.what()}});
        admission.refusal = error_response(500, "INTERNAL", "internal error");
      }
    }
    if (admission.refusal) {
      // Nothing of the body is read or stored: answer, then close.
      refused_ = !header_->is_done();
      return respond(std::move(*admission.refusal), false);
    }
    run_on_ = admission.run_on;
    const bool spool = admission.spool;
    const uint64_t limit = spool ? server_.options.max_body_bytes : server_.options.max_small_body_bytes;
    if (auto length = header_->content_length(); length && *length > limit) {
      linger_ = true;  // let the client finish sending so it can read the 413
      return respond(too_large(limit), false);
    }
    if (header_->is_done()) return handle({});
    if (beast::iequals(msg[http::field::expect], "100-continue")) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, msg.version());
      http::async_write(stream_, *cont, [self = shared_from_this(), cont, spool, limit](beast::error_code e, size_t) {
        if (e) return self->close();
        self->read_body(spool, limit);
      });
      return;
    }
    read_body(spool, limit);
  }

  void read_body(bool spool, uint64_t limit) {
    stream_.expires_after(server_.options.body_timeout);
    if (spool) {
      file_.emplace(std::move(*header_));
      file_->body_limit(limit);
      spool_path_ = server_.options.spool_dir /
                    ("body-" + std::to_string(::getpid()) + "-" + std::to_string(server_.spool_seq++) + ".part");
      beast::error_code ec;
      file_->get().body().open(spool_path_.c_str(), beast::file_mode::write, ec);
      if (ec) return respond(error_response(500, "INTERNAL", "cannot spool request body: " + ec.message()), false);
      http::async_read(stream_, buffer_, *file_, [self = shared_from_this(), limit](beast::error_code e, size_t) {
        self->file_->get().body().close();
        if (e == http::error::body_limit) {
          self->linger_ = true;
          return self->respond(self->too_large(limit), false);
        }
        if (e) return self->close();
        self->handle({});
      });
    } else {
      text_.emplace(std::move(*header_));
      text_->body_limit(limit);
      http::async_read(stream_, buffer_, *text_, [self = shared_from_this(), limit](beast::error_code e, size_t) {
        if (e == http::error::body_limit) {
          self->linger_ = true;
          return self->respond(self->too_large(limit), false);
        }
        if (e) return self->close();
        self->handle(std::move(self->text_->get().body()));
      });
    }
  }

  HttpResponse too_large(uint64_t limit) {
    return error_response(413, "PAYLOAD_TOO_LARGE", "request body exceeds the limit of " + std::to_string(limit) + " bytes",
                          {{"limitBytes", std::to_string(limit)}});
  }

  template <typename Fields>
  void copy_headers(const Fields& fields, HttpRequest& req) {
    for (const auto& f : fields) {
      std::string name(f.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      req.headers.emplace_back(std::move(name), std::string(f.value()));
    }
  }

  // The request is complete: run its handler where the admission said, then answer on the strand.
  // While the handler runs on a pool this session starts no I/O, so request_ is the handler's alone.
  void handle(std::string body) {
    request_.body = std::move(body);
    request_.body_file = spool_path_;
    if (run_on_ == RunOn::kInline) return deliver(run_handler());
    HandlerPool& pool = run_on_ == RunOn::kQueries ? *server_.query_pool : *server_.pool;
    const bool queued = pool.try_post([self = shared_from_this()] {
      auto res = std::make_shared<HttpResponse>(self->run_handler());
      net::post(self->stream_.get_executor(), [self, res] { self->deliver(std::move(*res)); });
    });
    if (!queued) respond(server_busy(), keep_alive_);
  }

  HttpResponse run_handler() {
    try {
      return server_.handler(request_);
    } catch (const std::exception& e) {
      log_error("http.handler_exception", {{"path", request_.path}, {"error", e.what()}});
      return error_response(500, "INTERNAL", "internal error");
    }
  }

  void deliver(HttpResponse res) {
    if (res.stream) return start_stream(std::move(res));
    respond(std::move(res), keep_alive_);
  }

  // The handler keeps the connection: hand the socket to a WebSocket or an event stream.
  void start_stream(HttpResponse res) {
    const bool no_body = header_ && !text_ && !file_;
    if (res.status == 101 && !(no_body && websocket::is_upgrade(header_->get()))) {
      HttpResponse refusal = error_response(426, "UPGRADE_REQUIRED",
                                            "this endpoint speaks WebSocket: send a GET with Upgrade: websocket");
      refusal.headers.emplace_back("Upgrade", "websocket");
      return respond(std::move(refusal), false);
    }
    if (res.status != 101 && (res.status != 200 || res.content_type != "text/event-stream"))
      return respond(error_response(500, "INTERNAL", "internal error: a stream must be a WebSocket or an event stream"), false);
    finish_request();  // a stream is not a request in flight: shutdown closes it instead of waiting
    streaming_ = true;
    auto socket = stream_.release_socket();
    if (res.status == 101) {
      auto conn = std::make_shared<WebSocketConn>(std::move(socket), std::move(res.stream), server_.options,
                                                  shared_from_this());
      stream_conn_ = conn;
      conn->start(header_->get());  // header_ outlives the handshake: the connection keeps this session
      return;
    }
    std::string head = "HTTP/1.1 200 OK\r\nServer: deeplens\r\nContent-Type: text/event-stream\r\n"
                       "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Accel-Buffering: no\r\n"
                       "Connection: close\r\n";
    for (const auto& [k, v] : res.headers) head += k + ": " + v + "\r\n";
    head += "\r\n";
    auto conn = std::make_shared<EventStreamConn>(std::move(socket), std::move(res.stream), server_.options,
                                                  shared_from_this());
    stream_conn_ = conn;
    conn->start(std::move(head));
  }

  void respond(HttpResponse res, bool keep_alive) {
    if (!spool_path_.empty()) {
      std::error_code ec;
      std::filesystem::remove(spool_path_, ec);
      spool_path_.clear();
    }
    keep_alive = keep_alive && !server_.draining;
    auto out = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(res.status), 11);
    out->set(http::field::server, "deeplens");
    if (!res.content_type.empty()) out->set(http::field::content_type, res.content_type);
    out->set("X-Content-Type-Options", "nosniff");
    for (auto& [k, v] : res.headers) out->set(k, v);
    out->body() = std::move(res.body);
    out->keep_alive(keep_alive);
    out->prepare_payload();
    stream_.expires_after(server_.options.body_timeout);
    http::async_write(stream_, *out, [self = shared_from_this(), out, keep_alive](beast::error_code ec, size_t) {
      if (ec == http::error::end_of_stream) ec = {};  // Beast's way of saying "now close"
      self->finish_request();
      if (!ec && self->refused_) return self->linger_close(std::chrono::seconds(1), 1u << 20);
      if (!ec && self->linger_) return self->linger_close(std::chrono::seconds(5), self->server_.options.max_body_bytes * 2);
      if (ec || !keep_alive) return self->close();
      self->header_.reset();
      self->text_.reset();
      self->file_.reset();
      self->read_header();
    });
  }

  void finish_request() {
    busy_ = false;
    if (counted_) {
      counted_ = false;
      --server_.in_flight;
    }
  }

  // After refusing a body: stop sending, read and discard what the client still sends (bounded in
  // time and bytes), then close — so the client sees our response instead of a broken pipe.
  // (The bytes are read into one small buffer and dropped: nothing is kept.)
  void linger_close(std::chrono::seconds for_at_most, uint64_t max_bytes) {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(for_at_most);
    discard_.resize(64 * 1024);
    drain(max_bytes);
  }

  void drain(uint64_t max_bytes) {
    stream_.async_read_some(net::buffer(discard_), [self = shared_from_this(), max_bytes](beast::error_code ec, size_t n) {
      self->drained_ += n;
      if (ec || self->drained_ > max_bytes) return self->close();
      self->drain(max_bytes);
    });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    finish_request();
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
    if (!spool_path_.empty()) {
      std::error_code fec;
      std::filesystem::remove(spool_path_, fec);
    }
  }

  Impl& server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> header_;
  std::optional<http::request_parser<http::string_body>> text_;
  std::optional<http::request_parser<http::file_body>> file_;
  std::filesystem::path spool_path_;
  const std::string client_;
  HttpRequest request_;  // from the headers on; the body is added before the handler runs
  bool keep_alive_ = true;
  RunOn run_on_ = RunOn::kPool;
  bool refused_ = false;  // refused at admission with body bytes unread
  bool busy_ = false;
  bool counted_ = false;
  bool closed_ = false;
  bool linger_ = false;
  bool streaming_ = false;                 // the socket went to a stream connection
  std::weak_ptr<StreamConn> stream_conn_;  // that connection (it owns this session)
  std::vector<char> discard_;
  uint64_t drained_ = 0;
};

void HttpServer::Impl::do_accept() {
  acceptor->async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || !acceptor->is_open()) return;
      log_warn("http.accept_failed", {{"error", ec.message()}});
    } else {
      beast::error_code peer_ec;
      const auto peer = socket.remote_endpoint(peer_ec);
      std::string client = peer_ec ? std::string("unknown") : peer.address().to_string();
      if (!admit_connection(client)) {
        // Past a limit: close before reading anything (the cheapest refusal there is).
        beast::error_code close_ec;
        socket.close(close_ec);
        if (draining) return;
        if (acceptor->is_open()) do_accept();
        return;
      }
      auto session = std::make_shared<Session>(*this, std::move(socket), std::move(client));
      {
        std::lock_guard lock(sessions_mu);
        sessions.remove_if([](const std::weak_ptr<Session>& w) { return w.expired(); });
        sessions.push_back(session);
      }
      session->start();
    }
    if (acceptor->is_open()) do_accept();
  });
}

HttpServer::HttpServer(HttpServerOptions options, Handler handler, Admit admit)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->handler = std::move(handler);
  impl_->admit = std::move(admit);
}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start() {
  const auto& listen = impl_->options.listen;
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos)
    return Error(ErrorCode::kInvalidArgument, "server.listen must be HOST:PORT, got '" + listen + "'").with("key", "server.listen");
  beast::error_code ec;
  const auto address = net::ip::make_address(listen.substr(0, colon), ec);
  if (ec) return Error(ErrorCode::kInvalidArgument, "server.listen: bad address '" + listen + "'").with("key", "server.listen");
  int port = 0;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (...) {
    port = -1;
  }
  if (port < 0 || port > 65535)
    return Error(ErrorCode::kInvalidArgument, "server.listen: bad port in '" + listen + "'").with("key", "server.listen");
  tcp::endpoint endpoint(address, static_cast<uint16_t>(port));
  // The acceptor lives on its own strand: its completion handler (which re-arms the accept) and
  // stop()'s close never run at once on two io threads.
  auto& acc = impl_->acceptor.emplace(net::make_strand(impl_->ioc));
  acc.open(endpoint.protocol(), ec);
  if (!ec) acc.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(endpoint, ec);
  if (!ec) acc.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    return Error(ErrorCode::kUnavailable, "cannot listen on " + listen + ": " + ec.message()).with("listen", listen);
  impl_->bound_port = acc.local_endpoint().port();
  impl_->pool.emplace(impl_->options.threads, impl_->options.queue);
  impl_->query_pool.emplace(impl_->options.query_threads, impl_->options.query_queue, impl_->options.query_nice);
  impl_->do_accept();
  for (int i = 0; i < std::max(1, impl_->options.io_threads); ++i)
    impl_->threads.emplace_back([this] { impl_->ioc.run(); });
  return {};
}

uint16_t HttpServer::port() const { return impl_->bound_port; }

void HttpServer::stop() {
  if (impl_->threads.empty()) return;
  impl_->draining = true;
  if (impl_->acceptor)
    net::post(impl_->acceptor->get_executor(), [this] {
      beast::error_code ec;
      impl_->acceptor->close(ec);
    });
  const auto deadline = std::chrono::steady_clock::now() + impl_->options.drain_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    // Take the sessions out under the lock, act on them outside it: the last reference to a
    // session may be dropped here, and its destructor takes sessions_mu (release_connection).
    std::vector<std::shared_ptr<Impl::Session>> live;
    {
      std::lock_guard lock(impl_->sessions_mu);
      for (auto& w : impl_->sessions)
        if (auto s = w.lock()) live.push_back(std::move(s));
    }
    for (auto& s : live) s->close_if_idle();
    live.clear();
    if (impl_->in_flight == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (impl_->in_flight > 0) log_warn("http.drain_timeout", {{"inFlight", impl_->in_flight.load()}});
  // Streams were asked to close (1001): give their close frames a moment to go out (a peer that
  // does not answer is cut after 2 s, see StreamConn).
  const auto streams_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (std::chrono::steady_clock::now() < streams_deadline) {
    bool any = false;
    {
      std::lock_guard lock(impl_->sessions_mu);
      for (auto& w : impl_->sessions) any = any || !w.expired();
    }
    if (!any) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  // A handler still running past the drain timeout finishes here; its answer is not sent.
  impl_->pool->join();
  impl_->query_pool->join();
  impl_->pool.reset();
  impl_->query_pool.reset();
  {
    std::lock_guard lock(impl_->sessions_mu);
    impl_->sessions.clear();
  }
}

}  // namespace deeplens::api
