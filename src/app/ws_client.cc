#include "app/ws_client.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <mutex>

namespace deeplens::app {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;

struct WsClient::Impl {
  net::io_context ioc;
  websocket::stream<tcp::socket> ws{ioc};
  beast::flat_buffer buffer;
  std::mutex write_mu;
};

WsClient::WsClient() : impl_(std::make_unique<Impl>()) {}
WsClient::~WsClient() { close(); }

Result<std::unique_ptr<WsClient>> WsClient::connect(const std::string& base_url, const std::string& api_key) {
  std::string rest = base_url;
  for (const char* scheme : {"http://", "ws://"})
    if (rest.rfind(scheme, 0) == 0) rest = rest.substr(std::string(scheme).size());
  if (rest.rfind("https://", 0) == 0 || base_url.rfind("https://", 0) == 0)
    return Error(ErrorCode::kInvalidArgument, "the CLI's WebSocket client speaks plain ws:// only");
  rest = rest.substr(0, rest.find('/'));
  const auto colon = rest.rfind(':');
  const std::string host = colon == std::string::npos ? rest : rest.substr(0, colon);
  const std::string port = colon == std::string::npos ? "80" : rest.substr(colon + 1);
  std::unique_ptr<WsClient> c(new WsClient());
  try {
    tcp::resolver resolver(c->impl_->ioc);
    net::connect(c->impl_->ws.next_layer(), resolver.resolve(host, port));
    c->impl_->ws.set_option(websocket::stream_base::decorator([api_key](websocket::request_type& req) {
      req.set(beast::http::field::authorization, "Bearer " + api_key);
      req.set(beast::http::field::user_agent, "deeplens-cli");
    }));
    c->impl_->ws.read_message_max(16u << 20);
    c->impl_->ws.handshake(host + ":" + port, "/api/v1/ws");
  } catch (const beast::system_error& e) {
    return Error(ErrorCode::kUnavailable, std::string("WebSocket connection failed: ") + e.what());
  }
  return c;
}

Status WsClient::send(const std::string& text) {
  std::lock_guard lock(impl_->write_mu);
  beast::error_code ec;
  impl_->ws.text(true);
  impl_->ws.write(net::buffer(text), ec);
  if (ec) return Error(ErrorCode::kUnavailable, "WebSocket send failed: " + ec.message());
  return {};
}

Result<std::string> WsClient::read() {
  beast::error_code ec;
  impl_->buffer.consume(impl_->buffer.size());
  impl_->ws.read(impl_->buffer, ec);
  if (ec) {
    std::string why = ec.message();
    if (ec == websocket::error::closed) why = "closed by the server (" + std::to_string(impl_->ws.reason().code) + " " +
                                              std::string(impl_->ws.reason().reason.data(), impl_->ws.reason().reason.size()) + ")";
    return Error(ErrorCode::kUnavailable, "WebSocket: " + why);
  }
  return beast::buffers_to_string(impl_->buffer.data());
}

void WsClient::close() {
  if (!impl_) return;
  beast::error_code ec;
  impl_->ws.next_layer().shutdown(tcp::socket::shutdown_both, ec);
  impl_->ws.next_layer().close(ec);
}

}  // namespace deeplens::app
