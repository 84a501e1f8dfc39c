#include "common/ids.h"

#include <openssl/rand.h>

#include <cstdio>
#include <cstdlib>

namespace deeplens {

uint64_t SystemRandom::next_u64() {
  uint64_t value = 0;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&value), sizeof value) != 1) {
    std::fputs("fatal: the system random generator failed (RAND_bytes)\n", stderr);
    std::abort();
  }
  return value;
}

std::string IdGenerator::hex(size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  uint64_t word = 0;
  for (size_t i = 0; i < n; ++i) {
    if (i % 8 == 0) word = random_.next_u64();
    const unsigned byte = static_cast<unsigned>(word & 0xff);
    word >>= 8;
    out += kHex[byte >> 4];
    out += kHex[byte & 0xf];
  }
  return out;
}

std::string IdGenerator::uuid_v4() {
  uint64_t hi = random_.next_u64();
  uint64_t lo = random_.next_u64();
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // RFC 4122 variant
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    const uint64_t word = i < 8 ? hi : lo;
    const int shift = (7 - (i % 8)) * 8;
    const unsigned byte = (word >> shift) & 0xff;
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHex[byte >> 4];
    out += kHex[byte & 0xf];
  }
  return out;
}

bool is_uuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

bool is_image_id(std::string_view s) { return s.starts_with("img_") && is_uuid(s.substr(4)); }
bool is_event_id(std::string_view s) { return s.starts_with("evt_") && is_uuid(s.substr(4)); }

}  // namespace deeplens
