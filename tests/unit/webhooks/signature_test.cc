#include "webhooks/signature.h"

#include <gtest/gtest.h>

#include "common/base64.h"

namespace deeplens::webhooks {
namespace {

// The example of the Standard Webhooks specification (and Svix's documentation).
constexpr const char* kSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr const char* kId = "msg_p5jXN8AQM9LWM0D4loKWxJek";
constexpr int64_t kTimestamp = 1614265330;
constexpr const char* kBody = R"({"test": 2432232314})";

TEST(WebhookSignature, MatchesTheStandardWebhooksExample) {
  auto sig = sign(kSecret, kId, kTimestamp, kBody);
  ASSERT_TRUE(sig.ok()) << sig.error().message;
  EXPECT_EQ(*sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

TEST(WebhookSignature, AnyChangeToIdTimestampOrBodyChangesIt) {
  const std::string base = sign(kSecret, kId, kTimestamp, kBody).value();
  EXPECT_NE(sign(kSecret, "msg_other", kTimestamp, kBody).value(), base);
  EXPECT_NE(sign(kSecret, kId, kTimestamp + 1, kBody).value(), base);
  EXPECT_NE(sign(kSecret, kId, kTimestamp, R"({"test": 2432232315})").value(), base);
}

TEST(WebhookSignature, TheHeaderCarriesOneSignaturePerSecretDuringARotation) {
  SeededRandom random(7);
  const std::string other = generate_secret(random);
  auto header = signature_header({kSecret, other}, kId, kTimestamp, kBody);
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(*header, sign(kSecret, kId, kTimestamp, kBody).value() + " " + sign(other, kId, kTimestamp, kBody).value());
}

TEST(WebhookSignature, GeneratedSecretsAreWhsecAndThirtyTwoBytesAndDiffer) {
  SystemRandom random;
  const std::string a = generate_secret(random), b = generate_secret(random);
  ASSERT_TRUE(a.starts_with("whsec_"));
  EXPECT_EQ(base64_decode(a.substr(6)).value().size(), 32u);
  EXPECT_NE(a, b);
}

TEST(WebhookSignature, ASecretWithoutThePrefixOrNotBase64IsRefused) {
  EXPECT_FALSE(sign("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", kId, kTimestamp, kBody).ok());
  EXPECT_FALSE(sign("whsec_***", kId, kTimestamp, kBody).ok());
  EXPECT_FALSE(sign("whsec_", kId, kTimestamp, kBody).ok());
}

}  // namespace
}  // namespace deeplens::webhooks
