#include "webhooks/secret_box.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "common/base64.h"

namespace deeplens::webhooks {
namespace {

constexpr size_t kKeyBytes = 32, kNonceBytes = 12, kTagBytes = 16;
constexpr std::string_view kPrefix = "v1:";

std::string random_bytes(RandomSource& random, size_t n) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = random.next_u64();
    for (size_t b = 0; b < 8 && i + b < n; ++b) out[i + b] = static_cast<char>((v >> (8 * b)) & 0xff);
  }
  return out;
}

struct CipherCtx {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  ~CipherCtx() { EVP_CIPHER_CTX_free(ctx); }
};

const unsigned char* u8(const std::string& s) { return reinterpret_cast<const unsigned char*>(s.data()); }
const unsigned char* u8(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

}  // namespace

Result<SecretBox> SecretBox::from_key(std::string key) {
  if (key.size() != kKeyBytes)
    return Error(ErrorCode::kInvalidArgument, "the webhook secrets key must be 32 bytes (base64 of 32 bytes)");
  return SecretBox(std::move(key));
}

Result<SecretBox> SecretBox::from_file(const std::filesystem::path& path, RandomSource& random) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    std::filesystem::create_directories(path.parent_path(), ec);
    const std::string text = base64_encode(random_bytes(random, kKeyBytes)) + "\n";
    // O_EXCL: of two processes creating it at once, one writes and both then read the same key.
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
      const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
      ::close(fd);
      if (!ok)
        return Error(ErrorCode::kIoError, "cannot write the webhook secrets key").with("path", path.string());
    } else if (errno != EEXIST) {
      return Error(ErrorCode::kIoError, "cannot create the webhook secrets key").with("path", path.string());
    }
  }
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  auto key = base64_decode(text);
  if (!in || !key || key->size() != kKeyBytes)
    return Error(ErrorCode::kInvalidArgument, "the webhook secrets key file must hold base64 of 32 bytes")
        .with("path", path.string());
  return SecretBox(std::move(key).value());
}

Result<std::string> SecretBox::seal(std::string_view plain, RandomSource& random) const {
  const std::string nonce = random_bytes(random, kNonceBytes);
  CipherCtx c;
  std::string out(plain.size() + kTagBytes, '\0');
  int len = 0, total = 0;
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  if (!c.ctx || EVP_EncryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, u8(key_), u8(nonce)) != 1 ||
      EVP_EncryptUpdate(c.ctx, o, &len, u8(plain), static_cast<int>(plain.size())) != 1)
    return Error(ErrorCode::kInternal, "AES-256-GCM encryption failed");
  total = len;
  if (EVP_EncryptFinal_ex(c.ctx, o + total, &len) != 1) return Error(ErrorCode::kInternal, "AES-256-GCM encryption failed");
  total += len;
  if (EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_GET_TAG, kTagBytes, o + total) != 1)
    return Error(ErrorCode::kInternal, "AES-256-GCM tag failed");
  out.resize(total + kTagBytes);
  return std::string(kPrefix) + base64_encode(nonce + out);
}

Result<std::string> SecretBox::open(std::string_view sealed) const {
  auto bad = [] {
    return Error(ErrorCode::kFailedPrecondition,
                 "a webhook secret cannot be opened: it was sealed under another key (webhooks.secrets_key_file)");
  };
  if (!sealed.starts_with(kPrefix)) return bad();
  auto raw = base64_decode(sealed.substr(kPrefix.size()));
  if (!raw || raw->size() < kNonceBytes + kTagBytes) return bad();
  const std::string_view all(*raw);
  const auto nonce = all.substr(0, kNonceBytes);
  const auto body = all.substr(kNonceBytes, all.size() - kNonceBytes - kTagBytes);
  std::string tag(all.substr(all.size() - kTagBytes));
  CipherCtx c;
  std::string out(body.size() + kTagBytes, '\0');
  int len = 0, total = 0;
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  if (!c.ctx || EVP_DecryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, u8(key_), u8(nonce)) != 1 ||
      EVP_DecryptUpdate(c.ctx, o, &len, u8(body), static_cast<int>(body.size())) != 1)
    return bad();
  total = len;
  if (EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_TAG, kTagBytes, tag.data()) != 1 ||
      EVP_DecryptFinal_ex(c.ctx, o + total, &len) != 1)
    return bad();
  total += len;
  out.resize(total);
  return out;
}

}  // namespace deeplens::webhooks
