#include "webhooks/signature.h"

#include "common/base64.h"
#include "common/sha256.h"

namespace deeplens::webhooks {

std::string generate_secret(RandomSource& random) {
  std::string key(32, '\0');
  for (size_t i = 0; i < key.size(); i += 8) {
    const uint64_t v = random.next_u64();
    for (size_t b = 0; b < 8 && i + b < key.size(); ++b) key[i + b] = static_cast<char>((v >> (8 * b)) & 0xff);
  }
  return std::string(kSecretPrefix) + base64_encode(key);
}

Result<std::string> secret_key(std::string_view secret) {
  if (!secret.starts_with(kSecretPrefix))
    return Error(ErrorCode::kInvalidArgument, "a webhook secret starts with whsec_");
  auto key = base64_decode(secret.substr(kSecretPrefix.size()));
  if (!key || key->empty()) return Error(ErrorCode::kInvalidArgument, "a webhook secret is whsec_ + base64");
  return key;
}

Result<std::string> sign(std::string_view secret, std::string_view message_id, int64_t timestamp,
                         std::string_view body) {
  auto key = secret_key(secret);
  if (!key) return std::move(key).error();
  std::string content;
  content.reserve(message_id.size() + body.size() + 24);
  content.append(message_id).append(".").append(std::to_string(timestamp)).append(".").append(body);
  return "v1," + base64_encode(hmac_sha256(*key, content));
}

Result<std::string> signature_header(const std::vector<std::string>& secrets, std::string_view message_id,
                                     int64_t timestamp, std::string_view body) {
  std::string out;
  for (const auto& s : secrets) {
    auto one = sign(s, message_id, timestamp, body);
    if (!one) return std::move(one).error();
    if (!out.empty()) out += ' ';
    out += *one;
  }
  return out;
}

}  // namespace deeplens::webhooks
