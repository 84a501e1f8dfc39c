// The small pieces security rests on: redaction of secrets, constant-time comparison, CSPRNG ids
// and keys, base64 through OpenSSL.
#include <gtest/gtest.h>

#include <set>

#include "common/base64.h"
#include "common/config.h"
#include "common/ids.h"
#include "common/sha256.h"

namespace deeplens {
namespace {

TEST(Redaction, KeysThatNameASecretAreHiddenWhole) {
  EXPECT_EQ(redact_config_value("auth.default_key", "dlk_abc"), "<redacted>");
  EXPECT_EQ(redact_config_value("sasl.password", "pw"), "<redacted>");
  EXPECT_EQ(redact_config_value("webhooks.signing_secret", "whsec_x"), "<redacted>");
  EXPECT_EQ(redact_config_value("ssl.key.password", "x"), "<redacted>");
  EXPECT_EQ(redact_config_value("auth.default_key", ""), "") << "an empty value says it is not set";
  EXPECT_EQ(redact_config_value("server.listen", "127.0.0.1:8080"), "127.0.0.1:8080");
}

TEST(Redaction, UrlPasswordsAndConnectionStringKeysAreHiddenInAnyText) {
  EXPECT_EQ(redact_secrets("postgresql://app:hunter2@db:5432/x"), "postgresql://app:<redacted>@db:5432/x");
  EXPECT_EQ(redact_secrets("postgresql://app@db/x"), "postgresql://app@db/x");
  EXPECT_EQ(redact_secrets("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0==;EndpointSuffix=x"),
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=<redacted>;EndpointSuffix=x");
  EXPECT_EQ(redact_secrets("https://acct.blob/c?sv=1&sig=abc%2F&se=2"), "https://acct.blob/c?sv=1&sig=<redacted>&se=2");
  EXPECT_EQ(redact_config_value("metadata.url", "postgres://u:p@h/d"), "postgres://u:<redacted>@h/d");
}

TEST(ConstantTimeEqual, ComparesContentAndLength) {
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "abcd"));
  EXPECT_TRUE(constant_time_equal("", ""));
}

TEST(SystemRandom, HexHasTheAskedLengthAndDoesNotRepeat) {
  SystemRandom random;
  IdGenerator ids(random);
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string h = ids.hex(32);
    ASSERT_EQ(h.size(), 64u);
    ASSERT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos) << h;
    EXPECT_TRUE(seen.insert(h).second);
  }
}

TEST(Base64, MatchesRfc4648TestVectorsAndRoundTrips) {
  const std::pair<const char*, const char*> vectors[] = {
      {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(plain), encoded);
    auto back = base64_decode(encoded);
    ASSERT_TRUE(back.ok()) << encoded;
    EXPECT_EQ(*back, plain);
  }
  const std::string binary("\x00\xff\x10\x80\x7f", 5);
  EXPECT_EQ(*base64_decode(base64_encode(binary)), binary);
  EXPECT_FALSE(base64_decode("abc").ok());
  EXPECT_FALSE(base64_decode("a*c=").ok());
}

}  // namespace
}  // namespace deeplens
