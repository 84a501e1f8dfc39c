// Digests through OpenSSL EVP: SHA-256 in one shot or incrementally (hex output), HMAC-SHA256 and
// MD5 (raw bytes; MD5 only where a protocol asks for it, e.g. Azure's Content-MD5). Thread-safe.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace deeplens {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  void update(std::string_view bytes);
  std::string hex_digest();  // finishes; call once

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

std::string sha256_hex(std::string_view bytes);

// The 32 raw bytes of HMAC-SHA256(key, message).
std::string hmac_sha256(std::string_view key, std::string_view message);

// MD5, incrementally; digest() gives the 16 raw bytes (call once).
class Md5 {
 public:
  Md5();
  ~Md5();
  void update(std::string_view bytes);
  std::string digest();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// a == b in time that depends only on the lengths (CRYPTO_memcmp), for secrets and their digests.
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace deeplens
