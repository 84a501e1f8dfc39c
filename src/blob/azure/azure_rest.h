// The pure parts of talking to Azure Blob Storage: connection strings, how DeepLens keys map to
// containers and blob names, and Shared Key request signing. No I/O; thread-safe.
//
// Mapping (injective, so two tenants never share a container):
//   key "tenant-<t>/images/YYYY/MM/DD/<id>.<ext>"      -> container C(t), blob "YYYY/MM/DD/<id>.<ext>"
//   key "tenant-<t>/<kind>/YYYY/MM/DD/<id>.<ext>"      -> container C(t), blob "<kind>/YYYY/MM/DD/..."
//   C(t) = "<t>-images" (the spec's name) when that is a valid container name and t does not look
//   like a hashed name; otherwise "h" + 24 hex digits of SHA-256(t) + "-images". The tenant is also
//   kept in the container's metadata (x-ms-meta-deeplenstenant) so list() can map blobs back.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace deeplens::azure {

inline constexpr std::string_view kApiVersion = "2021-12-02";  // x-ms-version, pinned
inline constexpr std::string_view kTenantMetadata = "deeplenstenant";

struct Account {
  std::string name;
  std::string key;       // the decoded AccountKey bytes (never logged)
  std::string endpoint;  // blob service URL without a trailing '/', e.g. http://127.0.0.1:10000/devstoreaccount1
};

// Parses "DefaultEndpointsProtocol=https;AccountName=...;AccountKey=...;EndpointSuffix=..." or
// with BlobEndpoint=..., or "UseDevelopmentStorage=true" (Azurite's well-known account on
// 127.0.0.1:10000). Key names are case-insensitive. Only Shared Key (AccountKey) is supported: a
// SharedAccessSignature is refused with a message saying so. Errors never quote the key.
Result<Account> parse_connection_string(std::string_view text);

struct Location {
  std::string tenant;
  std::string container;
  std::string blob;
};

// kInvalidArgument for a key that is not "tenant-<slug>/<kind>/<path>" with safe characters.
Result<Location> locate(std::string_view key);
std::string container_for_tenant(std::string_view tenant);
// The DeepLens key of a blob in a tenant's container (the inverse of locate).
std::string key_for(std::string_view tenant, std::string_view blob);

// Percent-encodes everything but RFC 3986 unreserved characters (and '/' when keep_slash).
std::string percent_encode(std::string_view text, bool keep_slash);

struct SignedRequest {
  std::string method;
  std::string path;  // URL path as sent (already encoded), e.g. "/devstoreaccount1/c/2026/a.jpg"
  std::vector<std::pair<std::string, std::string>> query;    // decoded names and values
  std::vector<std::pair<std::string, std::string>> headers;  // as sent, including x-ms-date/x-ms-version
  size_t content_length = 0;
};

// The Shared Key StringToSign (service version 2015-02-21 and later): the verb, the standard
// headers in their fixed order (Content-Length empty when 0), the canonicalized x-ms- headers and
// the canonicalized resource "/<account><path>" with the query parameters sorted, one per line.
std::string string_to_sign(const SignedRequest& request, std::string_view account);
// "SharedKey <account>:<base64 HMAC-SHA256(key, string_to_sign)>".
std::string authorization(const SignedRequest& request, const Account& account);

// RFC 1123 date for x-ms-date, e.g. "Wed, 02 Dec 2026 23:00:00 GMT".
std::string http_date(int64_t unix_seconds);

// base64 of the MD5 of bytes (Content-MD5).
std::string content_md5(std::string_view bytes);

}  // namespace deeplens::azure
