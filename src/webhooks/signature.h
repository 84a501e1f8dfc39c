// Webhook signing as Standard Webhooks 1.0 specifies it: the secret is "whsec_" + base64 of the
// key bytes; a signature is "v1," + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body)),
// and the webhook-signature header holds one or more of them separated by spaces (two during a
// secret rotation). Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/ids.h"
#include "common/result.h"

namespace deeplens::webhooks {

inline constexpr std::string_view kSecretPrefix = "whsec_";

// A new secret: "whsec_" + base64 of 32 bytes from `random` (SystemRandom in production).
std::string generate_secret(RandomSource& random);

// The key bytes of a "whsec_..." secret; kInvalidArgument when it is not one.
Result<std::string> secret_key(std::string_view secret);

// "v1,<base64 signature>" of one message under one secret.
Result<std::string> sign(std::string_view secret, std::string_view message_id, int64_t timestamp,
                         std::string_view body);

// The webhook-signature header value: one signature per secret, space-separated.
Result<std::string> signature_header(const std::vector<std::string>& secrets, std::string_view message_id,
                                     int64_t timestamp, std::string_view body);

}  // namespace deeplens::webhooks
