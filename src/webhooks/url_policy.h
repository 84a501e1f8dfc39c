// Where webhooks may be sent: http(s) URLs only, and never (unless allowed) to addresses inside
// the host's own networks — loopback, private (RFC 1918, unique-local), link-local, cloud metadata,
// unspecified, multicast, reserved — which would let a tenant reach services behind the firewall
// (SSRF). Checked when an endpoint is saved (every address its host resolves to) and again on the
// address each delivery actually connects to (the dispatcher's socket callback), so a DNS answer
// that changes after the check (rebinding) gains nothing. Pure functions apart from DNS.
#pragma once

#include <sys/socket.h>

#include <string>
#include <string_view>

#include "common/result.h"

namespace deeplens::webhooks {

struct WebhookUrl {
  std::string scheme;  // "http" or "https"
  std::string host;    // as written (a name, an IPv4 address or an IPv6 address without brackets)
  int port = 0;
};

// kInvalidArgument (reason "invalid_url") naming what is wrong: not absolute, another scheme,
// user:password@, no host, longer than 2048 bytes, a fragment.
Result<WebhookUrl> parse_webhook_url(std::string_view url);

// Why no delivery may go to this address ("loopback", "private", "link-local", "metadata",
// "unspecified", "multicast", "reserved"); empty when it is a public address.
std::string forbidden_address_reason(const sockaddr* address);
// The same for an address in text form; "unparseable" when it is not an IP address.
std::string forbidden_address_reason(std::string_view ip);

// Resolves url's host and answers kInvalidArgument (reason "private_address", with the address)
// when any address is forbidden and allow_private is false; kInvalidArgument (reason
// "unresolvable") when the name does not resolve.
Status check_destination(const WebhookUrl& url, bool allow_private);

}  // namespace deeplens::webhooks
