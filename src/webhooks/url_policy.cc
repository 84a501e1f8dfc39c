#include "webhooks/url_policy.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>

#include <cstring>
#include <memory>

namespace deeplens::webhooks {
namespace {

Error invalid_url(std::string message, std::string_view url) {
  return Error(ErrorCode::kInvalidArgument, std::move(message))
      .with("reason", "invalid_url")
      .with("url", std::string(url.substr(0, 256)));
}

std::string reason_v4(uint32_t a) {  // host byte order
  auto in = [a](uint32_t net, int bits) { return bits == 0 || (a >> (32 - bits)) == (net >> (32 - bits)); };
  if (a == 0xA9FEA9FE || a == 0x646464C8) return "metadata";  // 169.254.169.254, 100.100.100.200
  if (in(0x7F000000, 8)) return "loopback";
  if (in(0x00000000, 8)) return "unspecified";
  if (in(0x0A000000, 8) || in(0xAC100000, 12) || in(0xC0A80000, 16) || in(0x64400000, 10)) return "private";
  if (in(0xA9FE0000, 16)) return "link-local";
  if (in(0xE0000000, 4)) return "multicast";
  if (in(0xF0000000, 4) || in(0xC0000000, 24) || in(0xC6120000, 15)) return "reserved";
  return "";
}

std::string reason_v6(const in6_addr& a) {
  const uint8_t* b = a.s6_addr;
  static const uint8_t kZero[16] = {};
  static const uint8_t kLoopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  static const uint8_t kAwsMetadata[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54};
  if (std::memcmp(b, kZero, 16) == 0) return "unspecified";
  if (std::memcmp(b, kLoopback, 16) == 0) return "loopback";
  if (std::memcmp(b, kAwsMetadata, 16) == 0) return "metadata";
  // IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d): judge the IPv4 address inside.
  static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  static const uint8_t kNat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  if (std::memcmp(b, kMapped, 12) == 0 || std::memcmp(b, kNat64, 12) == 0)
    return reason_v4((uint32_t(b[12]) << 24) | (uint32_t(b[13]) << 16) | (uint32_t(b[14]) << 8) | b[15]);
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return "link-local";
  if ((b[0] & 0xfe) == 0xfc) return "private";
  if (b[0] == 0xff) return "multicast";
  return "";
}

}  // namespace

Result<WebhookUrl> parse_webhook_url(std::string_view url) {
  if (url.empty()) return invalid_url("url is required", url);
  if (url.size() > 2048) return invalid_url("url is longer than 2048 bytes", url);
  std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> h(curl_url(), curl_url_cleanup);
  const std::string text(url);
  if (!h || curl_url_set(h.get(), CURLUPART_URL, text.c_str(), 0) != CURLUE_OK)
    return invalid_url("url is not an absolute http(s) URL", url);
  auto part = [&](CURLUPart p, unsigned flags = 0) -> std::string {
    char* v = nullptr;
    if (curl_url_get(h.get(), p, &v, flags) != CURLUE_OK || !v) return {};
    std::string out(v);
    curl_free(v);
    return out;
  };
  WebhookUrl out;
  out.scheme = part(CURLUPART_SCHEME);
  if (out.scheme != "http" && out.scheme != "https")
    return invalid_url("url must use http or https, not '" + out.scheme + "'", url);
  if (!part(CURLUPART_USER).empty() || !part(CURLUPART_PASSWORD).empty())
    return invalid_url("url must not carry user:password@ (the signature authenticates deliveries)", url);
  if (!part(CURLUPART_FRAGMENT).empty()) return invalid_url("url must not have a #fragment", url);
  out.host = part(CURLUPART_HOST);
  if (out.host.size() > 2 && out.host.front() == '[' && out.host.back() == ']')
    out.host = out.host.substr(1, out.host.size() - 2);
  if (out.host.empty()) return invalid_url("url has no host", url);
  const std::string port = part(CURLUPART_PORT, CURLU_DEFAULT_PORT);
  out.port = port.empty() ? 0 : std::atoi(port.c_str());
  if (out.port <= 0 || out.port > 65535) return invalid_url("url has no valid port", url);
  return out;
}

std::string forbidden_address_reason(const sockaddr* address) {
  if (!address) return "unparseable";
  if (address->sa_family == AF_INET)
    return reason_v4(ntohl(reinterpret_cast<const sockaddr_in*>(address)->sin_addr.s_addr));
  if (address->sa_family == AF_INET6) return reason_v6(reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr);
  return "reserved";
}

std::string forbidden_address_reason(std::string_view ip) {
  const std::string text(ip);
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) return reason_v4(ntohl(v4.s_addr));
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) return reason_v6(v6);
  return "unparseable";
}

Status check_destination(const WebhookUrl& url, bool allow_private) {
  if (allow_private) return {};
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(url.host.c_str(), std::to_string(url.port).c_str(), &hints, &found);
  if (rc != 0)
    return Error(ErrorCode::kInvalidArgument, "the url's host '" + url.host + "' does not resolve: " + gai_strerror(rc))
        .with("reason", "unresolvable")
        .with("host", url.host);
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> list(found, freeaddrinfo);
  for (const addrinfo* a = found; a; a = a->ai_next) {
    const std::string why = forbidden_address_reason(a->ai_addr);
    if (why.empty()) continue;
    char text[INET6_ADDRSTRLEN] = {};
    const void* raw = a->ai_family == AF_INET
                          ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(a->ai_addr)->sin_addr)
                          : static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(a->ai_addr)->sin6_addr);
    inet_ntop(a->ai_family, raw, text, sizeof text);
    return Error(ErrorCode::kInvalidArgument,
                 "webhook urls must not point into private networks: '" + url.host + "' resolves to " + text + " (" +
                     why + "); set webhooks.allow_private_networks = true to allow it")
        .with("reason", "private_address")
        .with("address", text);
  }
  return {};
}

}  // namespace deeplens::webhooks
