// SecretBox: seals webhook secrets (AES-256-GCM, a fresh 96-bit nonce per seal) under a key that
// lives outside the database — a key file (created 0600 on first use) or a configured value — so
// a database dump alone does not reveal them. Sealed text: "v1:" + base64(nonce || ciphertext ||
// tag). Every process that signs deliveries for the same database needs the same key.
// Thread-safe (no mutable state after construction).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "common/ids.h"
#include "common/result.h"

namespace deeplens::webhooks {

class SecretBox {
 public:
  // key: 32 bytes.
  static Result<SecretBox> from_key(std::string key);
  // Reads the key (base64 of 32 bytes) from path; creates it with 32 bytes from `random` if absent.
  static Result<SecretBox> from_file(const std::filesystem::path& path, RandomSource& random);

  Result<std::string> seal(std::string_view plain, RandomSource& random) const;
  // kFailedPrecondition when the text was sealed under another key or altered.
  Result<std::string> open(std::string_view sealed) const;

 private:
  explicit SecretBox(std::string key) : key_(std::move(key)) {}
  std::string key_;
};

}  // namespace deeplens::webhooks
