#include "api/web_assets.h"

#include <map>

#include "common/sha256.h"

namespace deeplens::api {

namespace {

std::string content_type_of(std::string_view name) {
  auto ends = [&](std::string_view ext) { return name.size() >= ext.size() && name.substr(name.size() - ext.size()) == ext; };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  if (ends(".png")) return "image/png";
  return "application/octet-stream";
}

}  // namespace

const WebAsset* find_web_asset(std::string_view name) {
  static const std::map<std::string, WebAsset, std::less<>> kAssets = [] {
    std::map<std::string, WebAsset, std::less<>> out;
    for (const auto& f : embedded_web_files())
      out.emplace(std::string(f.name), WebAsset{f.bytes, content_type_of(f.name), "\"" + sha256_hex(f.bytes).substr(0, 32) + "\""});
    return out;
  }();
  auto it = kAssets.find(name);
  return it == kAssets.end() ? nullptr : &it->second;
}

}  // namespace deeplens::api
