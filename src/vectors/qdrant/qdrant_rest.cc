#include "vectors/qdrant/qdrant_rest.h"

#include <openssl/evp.h>

#include <array>
#include <cstdint>

namespace deeplens::qdrant {
namespace {

constexpr std::string_view kTenantPrefix = "tenant_";
constexpr std::string_view kSharedPrefix = "deeplens_";
constexpr std::string_view kSuffix = "_vectors";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool name_char(char c, bool underscore_ok) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '~' || (underscore_ok && c == '_');
}

}  // namespace

Result<std::string> endpoint_of(std::string_view url) {
  constexpr std::string_view kScheme = "qdrant+";
  auto bad = [&] {
    return Error(ErrorCode::kInvalidArgument,
                 "vectors.url: expected empty (embedded index) or qdrant+http://HOST:PORT / qdrant+https://HOST:PORT, got '" +
                     std::string(url) + "'")
        .with("key", "vectors.url");
  };
  if (url.substr(0, kScheme.size()) != kScheme) return bad();
  std::string rest(url.substr(kScheme.size()));
  const bool http = rest.rfind("http://", 0) == 0, https = rest.rfind("https://", 0) == 0;
  if (!http && !https) return bad();
  const size_t host = rest.find("://") + 3;
  if (host >= rest.size() || rest[host] == '/' || rest.find_first_of("?#@", host) != std::string::npos) return bad();
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  return rest;
}

Result<Multitenancy> parse_multitenancy(std::string_view text) {
  if (text == "collection") return Multitenancy::kCollection;
  if (text == "payload") return Multitenancy::kPayload;
  return Error(ErrorCode::kInvalidArgument,
               "vectors.qdrant.multitenancy: expected 'collection' (one collection per tenant and model) or 'payload' "
               "(one collection per model, filtered by tenant), got '" + std::string(text) + "'")
      .with("key", "vectors.qdrant.multitenancy");
}

std::string uuid_v5(std::string_view namespace_uuid, std::string_view name) {
  std::array<unsigned char, 16> ns{};
  size_t n = 0;
  for (size_t i = 0; i + 1 < namespace_uuid.size() && n < ns.size(); ++i) {
    if (namespace_uuid[i] == '-') continue;
    ns[n++] = static_cast<unsigned char>(hex_value(namespace_uuid[i]) << 4 | hex_value(namespace_uuid[i + 1]));
    ++i;
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  EVP_DigestInit_ex(md, EVP_sha1(), nullptr);
  EVP_DigestUpdate(md, ns.data(), ns.size());
  EVP_DigestUpdate(md, name.data(), name.size());
  EVP_DigestFinal_ex(md, digest, &len);
  EVP_MD_CTX_free(md);
  digest[6] = static_cast<unsigned char>((digest[6] & 0x0f) | 0x50);  // version 5
  digest[8] = static_cast<unsigned char>((digest[8] & 0x3f) | 0x80);  // RFC 4122 variant
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xf];
  }
  return out;
}

Result<Target> target_of(std::string_view logical, Multitenancy mode) {
  auto bad = [&] {
    return Error(ErrorCode::kInvalidArgument, "not a DeepLens collection name: '" + std::string(logical) + "'")
        .with("collection", std::string(logical));
  };
  if (logical.size() <= kTenantPrefix.size() + kSuffix.size() + 2 || logical.substr(0, kTenantPrefix.size()) != kTenantPrefix ||
      logical.substr(logical.size() - kSuffix.size()) != kSuffix)
    return bad();
  const std::string_view inner = logical.substr(kTenantPrefix.size(), logical.size() - kTenantPrefix.size() - kSuffix.size());
  // Tenant slugs hold no '_' (collection_name() escapes one), so the tenant ends at the first '_'.
  const size_t cut = inner.find('_');
  if (cut == std::string_view::npos || cut == 0 || cut + 1 >= inner.size()) return bad();
  Target t;
  t.logical = std::string(logical);
  t.tenant = std::string(inner.substr(0, cut));
  t.model = std::string(inner.substr(cut + 1));
  for (char c : t.tenant)
    if (!name_char(c, false)) return bad();
  for (char c : t.model)
    if (!name_char(c, true)) return bad();
  t.collection = mode == Multitenancy::kPayload ? shared_collection(t.model) : t.logical;
  return t;
}

std::string shared_collection(std::string_view model) {
  return std::string(kSharedPrefix) + std::string(model) + std::string(kSuffix);
}

std::string model_of_shared(std::string_view name) {
  if (name.size() <= kSharedPrefix.size() + kSuffix.size() || name.substr(0, kSharedPrefix.size()) != kSharedPrefix ||
      name.substr(name.size() - kSuffix.size()) != kSuffix)
    return {};
  return std::string(name.substr(kSharedPrefix.size(), name.size() - kSharedPrefix.size() - kSuffix.size()));
}

std::string point_id(const Target& target, std::string_view image_id, Multitenancy mode) {
  if (mode == Multitenancy::kPayload) return uuid_v5(kPointNamespace, target.tenant + "/" + std::string(image_id));
  return uuid_v5(kPointNamespace, image_id);
}

nlohmann::json match(std::string_view key, std::string_view value) {
  return {{"key", std::string(key)}, {"match", {{"value", std::string(value)}}}};
}

nlohmann::json tenant_filter(const Target& target, const nlohmann::json& extra) {
  nlohmann::json must = nlohmann::json::array({match("tenantId", target.tenant)});
  if (!extra.is_null()) must.push_back(extra);
  return {{"must", std::move(must)}};
}

std::string error_text(std::string_view body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("status") && j["status"].is_object() && j["status"].contains("error") &&
      j["status"]["error"].is_string())
    return j["status"]["error"].get<std::string>();
  return std::string(body.substr(0, 200));
}

}  // namespace deeplens::qdrant
