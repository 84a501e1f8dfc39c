#include "webhooks/secret_box.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

namespace deeplens::webhooks {
namespace {

std::filesystem::path temp_dir() {
  auto dir = std::filesystem::temp_directory_path() / ("secret-box-" + std::to_string(::getpid()) + "-" +
                                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(SecretBox, SealedSecretsOpenAndDoNotContainTheSecret) {
  SystemRandom random;
  auto box = SecretBox::from_key(std::string(32, 'k')).value();
  const std::string secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const std::string a = box.seal(secret, random).value(), b = box.seal(secret, random).value();
  EXPECT_NE(a, b);  // a fresh nonce each time
  EXPECT_EQ(a.find("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), std::string::npos);
  EXPECT_EQ(box.open(a).value(), secret);
  EXPECT_EQ(box.open(b).value(), secret);
}

TEST(SecretBox, AnotherKeyOrAnAlteredTextDoesNotOpen) {
  SystemRandom random;
  auto box = SecretBox::from_key(std::string(32, 'k')).value();
  auto other = SecretBox::from_key(std::string(32, 'j')).value();
  std::string sealed = box.seal("whsec_abc", random).value();
  EXPECT_EQ(other.open(sealed).error().code, ErrorCode::kFailedPrecondition);
  // A character inside the base64 (not next to the padding, whose low bits may be ignored).
  sealed[10] = sealed[10] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(box.open(sealed).ok());
  EXPECT_FALSE(box.open("plain text").ok());
  EXPECT_FALSE(SecretBox::from_key("short").ok());
}

TEST(SecretBox, TheKeyFileIsCreatedOwnerOnlyAndReusedAfterwards) {
  SystemRandom random;
  const auto dir = temp_dir();
  const auto path = dir / "keys" / "webhook-secrets.key";
  auto first = SecretBox::from_file(path, random);
  ASSERT_TRUE(first.ok()) << first.error().message;
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string sealed = first->seal("whsec_abc", random).value();
  auto second = SecretBox::from_file(path, random);  // a restart, or a second process
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->open(sealed).value(), "whsec_abc");
  std::ofstream(path, std::ios::trunc) << "not base64 of 32 bytes\n";
  EXPECT_EQ(SecretBox::from_file(path, random).error().code, ErrorCode::kInvalidArgument);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace deeplens::webhooks
