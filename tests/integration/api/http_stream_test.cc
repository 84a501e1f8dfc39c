// Long-lived connections through HttpServer (StreamHandler): a WebSocket whose handler echoes and
// is sent to from another thread at the same time, a client that never reads (closed once the send
// queue is full), and an event stream. A Beast client on a real loopback socket. Run under
// ThreadSanitizer by scripts/test.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <thread>

#include "api/http_server.h"
#include "support/pipeline_harness.h"

namespace deeplens::api {
namespace {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

// Echoes each message and, from its own thread, pushes `pushes` numbered frames.
class EchoHandler final : public StreamHandler {
 public:
  explicit EchoHandler(int pushes) : pushes_(pushes) {}
  ~EchoHandler() override {
    if (pusher_.joinable()) pusher_.join();
  }
  void on_open(std::shared_ptr<StreamSink> sink) override {
    sink_ = sink;
    pusher_ = std::thread([this, sink] {
      for (int i = 0; i < pushes_; ++i)
        if (!sink->send("push " + std::to_string(i))) ++refused;
    });
  }
  void on_message(std::string_view text) override { sink_->send("echo " + std::string(text)); }
  void on_close() override {
    if (pusher_.joinable()) pusher_.join();
    sink_.reset();
    closed = true;
  }
  std::atomic<int> refused{0};
  std::atomic<bool> closed{false};

 private:
  int pushes_;
  std::shared_ptr<StreamSink> sink_;
  std::thread pusher_;
};

class HttpStreamTest : public ::testing::Test {
 protected:
  void start(std::function<HttpResponse(HttpRequest&)> handler, uint64_t queue_bytes = 4u << 20) {
    dir_ = testing::make_temp_dir("deeplens-stream");
    HttpServerOptions o;
    o.listen = "127.0.0.1:0";
    o.threads = 4;
    o.spool_dir = dir_;
    o.stream_queue_bytes = queue_bytes;
    server_ = std::make_unique<HttpServer>(o, std::move(handler), nullptr);
    ASSERT_TRUE(server_->start().ok());
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::filesystem::path dir_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpStreamTest, AWebSocketEchoesWhileAnotherThreadPushesAndEveryFrameArrivesInOrder) {
  auto handler = std::make_shared<EchoHandler>(500);
  start([&](HttpRequest&) {
    HttpResponse r;
    r.status = 101;
    r.stream = handler;
    return r;
  });
  net::io_context ioc;
  websocket::stream<tcp::socket> ws(ioc);
  ws.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server_->port()));
  ws.handshake("127.0.0.1", "/ws");
  for (int i = 0; i < 50; ++i) ws.write(net::buffer("m" + std::to_string(i)));
  int next_push = 0, next_echo = 0;
  beast::flat_buffer buf;
  while (next_push < 500 || next_echo < 50) {
    buf.consume(buf.size());
    ws.read(buf);
    const std::string text = beast::buffers_to_string(buf.data());
    if (text.rfind("push ", 0) == 0) EXPECT_EQ(text, "push " + std::to_string(next_push++));
    else EXPECT_EQ(text, "echo m" + std::to_string(next_echo++));
  }
  EXPECT_EQ(handler->refused, 0);
  ws.close(websocket::close_code::normal);
  testing::wait_until([&] { return handler->closed.load(); }, 5s);
  EXPECT_TRUE(handler->closed);
}

TEST_F(HttpStreamTest, AClientThatNeverReadsIsClosedWhenTheQueueIsFull) {
  auto handler = std::make_shared<EchoHandler>(20000);  // 20,000 frames of ~10 bytes: past 64 KiB
  start(
      [&](HttpRequest&) {
        HttpResponse r;
        r.status = 101;
        r.stream = handler;
        return r;
      },
      64 << 10);
  net::io_context ioc;
  websocket::stream<tcp::socket> ws(ioc);
  ws.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server_->port()));
  ws.next_layer().set_option(net::socket_base::receive_buffer_size(4096));
  ws.handshake("127.0.0.1", "/ws");
  // Not reading: the server's queue fills, sends are refused and the connection is closed.
  testing::wait_until([&] { return handler->closed.load(); }, 10s);
  EXPECT_TRUE(handler->closed);
  EXPECT_GT(handler->refused, 0);
}

TEST_F(HttpStreamTest, AnEventStreamSendsItsHeadersThenWhatTheHandlerSends) {
  auto handler = std::make_shared<EchoHandler>(3);
  start([&](HttpRequest&) {
    HttpResponse r;
    r.status = 200;
    r.content_type = "text/event-stream";
    r.stream = handler;
    return r;
  });
  net::io_context ioc;
  tcp::socket s(ioc);
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server_->port()));
  net::write(s, net::buffer(std::string("GET /events HTTP/1.1\r\nHost: x\r\n\r\n")));
  std::string got;
  char buf[1024];
  while (got.find("push 2") == std::string::npos) {
    beast::error_code ec;
    const size_t n = s.read_some(net::buffer(buf), ec);
    if (ec) break;
    got.append(buf, n);
  }
  EXPECT_NE(got.find("HTTP/1.1 200 OK\r\n"), std::string::npos);
  EXPECT_NE(got.find("Content-Type: text/event-stream\r\n"), std::string::npos);
  EXPECT_LT(got.find("push 0"), got.find("push 1"));
  s.close();
  testing::wait_until([&] { return handler->closed.load(); }, 5s);
  EXPECT_TRUE(handler->closed);
}

TEST_F(HttpStreamTest, ShutdownClosesOpenWebSocketsWithGoingAway) {
  auto handler = std::make_shared<EchoHandler>(0);
  start([&](HttpRequest&) {
    HttpResponse r;
    r.status = 101;
    r.stream = handler;
    return r;
  });
  net::io_context ioc;
  websocket::stream<tcp::socket> ws(ioc);
  ws.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server_->port()));
  ws.handshake("127.0.0.1", "/ws");
  std::thread stopper([&] { server_->stop(); });
  beast::flat_buffer buf;
  beast::error_code ec;
  ws.read(buf, ec);
  stopper.join();
  EXPECT_EQ(ec, websocket::error::closed);
  EXPECT_EQ(ws.reason().code, websocket::close_code::going_away);
  EXPECT_TRUE(handler->closed);
}

}  // namespace
}  // namespace deeplens::api
