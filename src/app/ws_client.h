// A blocking WebSocket client of GET /api/v1/ws (Boost.Beast) for the CLI: `upload --wait` and
// `watch`. One thread reads; send() may be called from another (Beast allows one read and one
// write at a time, which the CLI keeps to).
#pragma once

#include <memory>
#include <string>

#include "common/result.h"

namespace deeplens::app {

class WsClient {
 public:
  // base_url: http://HOST:PORT (as --url). The key goes in the upgrade's Authorization header.
  static Result<std::unique_ptr<WsClient>> connect(const std::string& base_url, const std::string& api_key);
  ~WsClient();

  Status send(const std::string& text);
  // The next text message; an error when the connection closed or broke.
  Result<std::string> read();
  void close();

 private:
  WsClient();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace deeplens::app
