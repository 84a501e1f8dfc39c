// The HTTP server under concurrent clients on a real loopback socket: admission from the headers
// (a refused body is never spooled), spooled bodies for admitted requests, connection limits at
// accept; where handlers run (the handler pool, the query pool, inline) and a full pool's 503. Run
// under ThreadSanitizer by scripts/test.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "api/http_server.h"
#include "support/pipeline_harness.h"

namespace deeplens::api {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

int connect_to(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Reads until the peer closes (every request here says Connection: close) or 10 s pass.
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10000) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string request(uint16_t port, bool good_key, size_t body_bytes) {
  const int fd = connect_to(port);
  if (fd < 0) return "connect failed";
  std::string head = "POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
                     std::to_string(body_bytes) + "\r\n" + (good_key ? "X-Api-Key: good\r\n" : "") + "\r\n";
  send_all(fd, head);
  send_all(fd, std::string(body_bytes, 'b'));  // a refused request may be cut off: that is the point
  std::string reply = read_all(fd);
  ::close(fd);
  return reply;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::make_temp_dir("deeplens-http"); }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }
  void start(HttpServerOptions o) {
    o.listen = "127.0.0.1:0";
    o.spool_dir = dir_;
    server_ = std::make_unique<HttpServer>(
        o,
        [this](HttpRequest& req) {
          ++handled_;
          std::error_code ec;
          const auto size = req.body_file.empty() ? 0 : fs::file_size(req.body_file, ec);
          return HttpResponse{200, "text/plain", std::to_string(size), {}, nullptr};
        },
        [this](HttpRequest& req) {
          ++admitted_calls_;
          Admission a;
          a.spool = true;
          if (req.header("x-api-key") != "good") a.refusal = error_response(401, "UNAUTHENTICATED", "invalid API key");
          return a;
        });
    ASSERT_TRUE(server_->start().ok());
  }

  fs::path dir_;
  std::unique_ptr<HttpServer> server_;
  std::atomic<int> handled_{0};
  std::atomic<int> admitted_calls_{0};
};

TEST_F(HttpServerTest, ConcurrentClientsAreAnsweredAndRefusedBodiesAreNeverSpooled) {
  HttpServerOptions o;
  o.threads = 4;
  start(o);
  const uint16_t port = server_->port();
  std::atomic<int> ok{0}, refused{0}, wrong{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        const bool good = (i + t) % 2 == 0;
        const size_t bytes = 64 * 1024 + static_cast<size_t>(t * 1000 + i);
        const std::string reply = request(port, good, bytes);
        if (good && reply.rfind("HTTP/1.1 200", 0) == 0 && reply.ends_with("\r\n\r\n" + std::to_string(bytes))) ++ok;
        else if (!good && reply.rfind("HTTP/1.1 401", 0) == 0) ++refused;
        else ++wrong;
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(ok.load(), 80);
  EXPECT_EQ(refused.load(), 80);
  EXPECT_EQ(handled_.load(), 80) << "a refused request reached the handler";
  server_->stop();
  EXPECT_TRUE(fs::is_empty(dir_)) << "spool files left behind";
}

TEST_F(HttpServerTest, ConnectionsPastThePerClientLimitAreClosedAtAccept) {
  HttpServerOptions o;
  o.threads = 2;
  o.max_connections_per_client = 5;
  start(o);
  std::vector<int> fds;
  for (int i = 0; i < 12; ++i) fds.push_back(connect_to(server_->port()));
  // Connections the server closed read end-of-stream at once; the others stay open (idle).
  int closed = 0;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  std::vector<bool> is_closed(fds.size(), false);
  while (closed < 7 && std::chrono::steady_clock::now() < deadline) {
    for (size_t i = 0; i < fds.size(); ++i) {
      if (is_closed[i]) continue;
      pollfd p{fds[i], POLLIN, 0};
      if (::poll(&p, 1, 10) > 0) {
        char c;
        if (::recv(fds[i], &c, 1, 0) <= 0) {
          is_closed[i] = true;
          ++closed;
        }
      }
    }
  }
  EXPECT_EQ(closed, 7);
  // The five admitted connections are served.
  int served = 0;
  for (size_t i = 0; i < fds.size(); ++i) {
    if (is_closed[i]) continue;
    send_all(fds[i], "POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Api-Key: good\r\nContent-Length: 1\r\n\r\nz");
    if (read_all(fds[i]).rfind("HTTP/1.1 200", 0) == 0) ++served;
  }
  EXPECT_EQ(served, 5);
  for (int fd : fds) ::close(fd);
  // Slots are released when connections close: a new one is served.
  ASSERT_TRUE(testing::wait_until([&] { return request(server_->port(), true, 10).rfind("HTTP/1.1 200", 0) == 0; }, 5s));
}

// GET path with Connection: close; the whole reply.
std::string get(uint16_t port, const std::string& path) {
  const int fd = connect_to(port);
  if (fd < 0) return "connect failed";
  send_all(fd, "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  std::string reply = read_all(fd);
  ::close(fd);
  return reply;
}

// Handlers on the three RunOn choices: /slow and /query block until released, /fast and /inline
// answer at once.
class HandlerPoolTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::make_temp_dir("deeplens-http-pools"); }
  void TearDown() override {
    release();
    server_.reset();
    fs::remove_all(dir_);
  }
  void start(HttpServerOptions o) {
    o.listen = "127.0.0.1:0";
    o.spool_dir = dir_;
    server_ = std::make_unique<HttpServer>(
        o,
        [this](HttpRequest& req) {
          if (req.path == "/slow" || req.path == "/query") {
            std::unique_lock lock(mu_);
            ++blocked_;
            cv_.notify_all();
            cv_.wait(lock, [&] { return released_; });
          }
          return HttpResponse{200, "text/plain", "done " + req.path, {}, nullptr};
        },
        [this](HttpRequest& req) {
          ++admitted_;
          Admission a;
          if (req.path == "/inline") a.run_on = RunOn::kInline;
          if (req.path == "/query") a.run_on = RunOn::kQueries;
          return a;
        });
    ASSERT_TRUE(server_->start().ok());
  }
  // Starts n requests to path in the background; returns once the handlers of `running` of them
  // block and all n were admitted (the rest then sit in the pool's queue).
  void start_blocked(const std::string& path, int n, int running) {
    const int admitted_before = admitted_;
    int want = 0;  // read before any of these requests can reach its handler
    {
      std::lock_guard lock(mu_);
      want = blocked_ + running;
    }
    for (int i = 0; i < n; ++i)
      background_.emplace_back([this, path] {
        auto reply = get(server_->port(), path);
        std::lock_guard lock(mu_);
        replies_.push_back(std::move(reply));
      });
    ASSERT_TRUE(testing::wait_until(
        [&] {
          std::lock_guard lock(mu_);
          return blocked_ >= want;
        },
        10s))
        << "the handlers did not start";
    ASSERT_TRUE(testing::wait_until([&] { return admitted_ >= admitted_before + n; }, 10s));
    std::this_thread::sleep_for(100ms);  // admitted → queued on its pool happens on the same strand, right after
  }
  void release() {
    {
      std::lock_guard lock(mu_);
      released_ = true;
      cv_.notify_all();
    }
    for (auto& t : background_) t.join();
    background_.clear();
  }
  // The reply and how long it took.
  std::pair<std::string, std::chrono::milliseconds> timed_get(const std::string& path) {
    const auto t0 = std::chrono::steady_clock::now();
    auto reply = get(server_->port(), path);
    return {reply, std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)};
  }

  fs::path dir_;
  std::unique_ptr<HttpServer> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  int blocked_ = 0;        // guarded by mu_
  bool released_ = false;  // guarded by mu_
  std::vector<std::string> replies_;  // guarded by mu_
  std::atomic<int> admitted_{0};
  std::vector<std::thread> background_;
};

TEST_F(HandlerPoolTest, BlockedQueryHandlersDelayNeitherPoolNorInlineRequestsAndAFullQueueAnswers503) {
  HttpServerOptions o;
  o.io_threads = 1;
  o.threads = 2;
  o.queue = 4;
  o.query_threads = 2;
  o.query_queue = 1;
  start(o);
  start_blocked("/query", 3, 2);  // both query threads blocked, one more queued: the query pool is full
  auto busy = timed_get("/query");
  EXPECT_EQ(busy.first.rfind("HTTP/1.1 503", 0), 0u) << busy.first;
  EXPECT_NE(busy.first.find("Retry-After: 1"), std::string::npos) << busy.first;
  EXPECT_NE(busy.first.find("SERVER_BUSY"), std::string::npos) << busy.first;
  for (const char* path : {"/fast", "/inline"}) {
    auto r = timed_get(path);
    EXPECT_EQ(r.first.rfind("HTTP/1.1 200", 0), 0u) << path << ": " << r.first;
    EXPECT_LT(r.second, 2s) << path << " waited behind blocked searches";
  }
  release();
  std::lock_guard lock(mu_);
  ASSERT_EQ(replies_.size(), 3u);
  for (const auto& reply : replies_) EXPECT_EQ(reply.rfind("HTTP/1.1 200", 0), 0u) << reply;
}

TEST_F(HandlerPoolTest, WithEveryHandlerThreadBlockedInlineRequestsAreStillAnswered) {
  HttpServerOptions o;
  o.io_threads = 1;
  o.threads = 2;
  o.queue = 2;
  start(o);
  start_blocked("/slow", 4, 2);  // both handler threads blocked, two queued: the pool is full
  auto busy = timed_get("/fast");
  EXPECT_EQ(busy.first.rfind("HTTP/1.1 503", 0), 0u) << busy.first;
  auto r = timed_get("/inline");
  EXPECT_EQ(r.first.rfind("HTTP/1.1 200", 0), 0u) << r.first;
  EXPECT_LT(r.second, 2s);
  release();
  std::lock_guard lock(mu_);
  ASSERT_EQ(replies_.size(), 4u);
  for (const auto& reply : replies_) EXPECT_EQ(reply.rfind("HTTP/1.1 200", 0), 0u) << reply;
  // The queued requests ran after the release: a full queue refuses, it never drops.
}

}  // namespace
}  // namespace deeplens::api
