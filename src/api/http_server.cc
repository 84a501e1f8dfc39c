#include "api/http_server.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
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
namespace net = boost::asio;
using tcp = net::ip::tcp;

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
  std::vector<std::thread> threads;
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

  void handle(std::string body) {
    HttpRequest& req = request_;
    req.body = std::move(body);
    req.body_file = spool_path_;
    HttpResponse res;
    try {
      res = server_.handler(req);
    } catch (const std::exception& e) {
      log_error("http.handler_exception", {{"path", req.path}, {"error", e.what()}});
      res = error_response(500, "INTERNAL", "internal error");
    }
    respond(std::move(res), keep_alive_);
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
    out->set(http::field::content_type, res.content_type);
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
  bool refused_ = false;  // refused at admission with body bytes unread
  bool busy_ = false;
  bool counted_ = false;
  bool closed_ = false;
  bool linger_ = false;
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
  auto& acc = impl_->acceptor.emplace(impl_->ioc);
  acc.open(endpoint.protocol(), ec);
  if (!ec) acc.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(endpoint, ec);
  if (!ec) acc.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    return Error(ErrorCode::kUnavailable, "cannot listen on " + listen + ": " + ec.message()).with("listen", listen);
  impl_->bound_port = acc.local_endpoint().port();
  impl_->do_accept();
  for (int i = 0; i < std::max(1, impl_->options.threads); ++i)
    impl_->threads.emplace_back([this] { impl_->ioc.run(); });
  return {};
}

uint16_t HttpServer::port() const { return impl_->bound_port; }

void HttpServer::stop() {
  if (impl_->threads.empty()) return;
  impl_->draining = true;
  net::post(impl_->ioc, [this] {
    beast::error_code ec;
    if (impl_->acceptor) impl_->acceptor->close(ec);
  });
  const auto deadline = std::chrono::steady_clock::now() + impl_->options.drain_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard lock(impl_->sessions_mu);
      for (auto& w : impl_->sessions)
        if (auto s = w.lock()) s->close_if_idle();
    }
    if (impl_->in_flight == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (impl_->in_flight > 0) log_warn("http.drain_timeout", {{"inFlight", impl_->in_flight.load()}});
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  {
    std::lock_guard lock(impl_->sessions_mu);
    impl_->sessions.clear();
  }
}

}  // namespace deeplens::api
