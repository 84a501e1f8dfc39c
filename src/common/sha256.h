// SHA-256 (OpenSSL EVP) in one shot or incrementally; hex output. Thread-safe (no shared state).
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

// a == b in time that depends only on the lengths (CRYPTO_memcmp), for secrets and their digests.
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace deeplens
