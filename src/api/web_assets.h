// The web UI's static files (web/ in the source tree), compiled into the binary by
// cmake/EmbedFiles.cmake so `serve` and `api` need nothing beside them and fetch nothing at run
// time. Immutable after start; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace deeplens::api {

struct EmbeddedFile {
  std::string_view name;  // relative to web/, e.g. "app.js"
  std::string_view bytes;
};

// Generated (web_assets_data.cc): every file of web/.
const std::vector<EmbeddedFile>& embedded_web_files();

struct WebAsset {
  std::string_view bytes;
  std::string content_type;
  std::string etag;  // strong: "\"<sha256 prefix>\""
};

// nullptr when web/ has no file of that name.
const WebAsset* find_web_asset(std::string_view name);

// The UI's Content-Security-Policy: its own scripts, styles and connections only; images also from
// blob: URLs (thumbnails are fetched with the API key and shown as object URLs); no inline script,
// no framing.
inline constexpr const char* kWebUiContentSecurityPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

}  // namespace deeplens::api
