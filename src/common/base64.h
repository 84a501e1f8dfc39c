// Standard base64 (RFC 4648, with padding) through OpenSSL's EVP_EncodeBlock / EVP_DecodeBlock.
// Thread-safe (no state).
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace deeplens {

std::string base64_encode(std::string_view bytes);
// kInvalidArgument when text is not base64 (wrong length or characters).
Result<std::string> base64_decode(std::string_view text);

}  // namespace deeplens
