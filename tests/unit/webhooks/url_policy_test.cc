#include "webhooks/url_policy.h"

#include <gtest/gtest.h>

namespace deeplens::webhooks {
namespace {

TEST(WebhookUrl, HttpAndHttpsUrlsParseWithTheirPort) {
  auto a = parse_webhook_url("https://hooks.example.com/deeplens?x=1");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->scheme, "https");
  EXPECT_EQ(a->host, "hooks.example.com");
  EXPECT_EQ(a->port, 443);
  auto b = parse_webhook_url("http://[2001:db8::1]:8080/x");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "2001:db8::1");
  EXPECT_EQ(b->port, 8080);
}

TEST(WebhookUrl, OtherSchemesCredentialsFragmentsAndNonUrlsAreRefused) {
  for (const char* url : {"ftp://example.com/", "file:///etc/passwd", "gopher://x/", "example.com/hook", "",
                          "http://user:pw@example.com/", "http://example.com/#frag", "http://",
                          "javascript:alert(1)"}) {
    auto r = parse_webhook_url(url);
    EXPECT_FALSE(r.ok()) << url;
    if (!r.ok()) {
      EXPECT_EQ(r.error().context.at("reason"), "invalid_url") << url;
    }
  }
  EXPECT_FALSE(parse_webhook_url("http://example.com/" + std::string(3000, 'a')).ok());
}

TEST(WebhookAddress, InternalAddressesAreNamedAndPublicOnesAllowed) {
  const std::pair<const char*, const char*> cases[] = {
      {"127.0.0.1", "loopback"},      {"127.8.9.10", "loopback"},   {"::1", "loopback"},
      {"10.0.0.1", "private"},        {"172.16.0.1", "private"},    {"172.31.255.255", "private"},
      {"192.168.1.1", "private"},     {"100.64.0.1", "private"},    {"fd12:3456::1", "private"},
      {"169.254.169.254", "metadata"}, {"fd00:ec2::254", "metadata"}, {"100.100.100.200", "metadata"},
      {"169.254.1.1", "link-local"},  {"fe80::1", "link-local"},    {"0.0.0.0", "unspecified"},
      {"::", "unspecified"},          {"224.0.0.1", "multicast"},   {"ff02::1", "multicast"},
      {"240.0.0.1", "reserved"},      {"255.255.255.255", "reserved"}, {"::ffff:127.0.0.1", "loopback"},
      {"::ffff:10.1.1.1", "private"}, {"64:ff9b::a9fe:a9fe", "metadata"},
      {"8.8.8.8", ""},                {"172.32.0.1", ""},           {"2606:4700:4700::1111", ""},
      {"100.128.0.1", ""},            {"11.0.0.1", ""},             {"not-an-ip", "unparseable"}};
  for (const auto& [ip, why] : cases) EXPECT_EQ(forbidden_address_reason(std::string_view(ip)), why) << ip;
}

TEST(WebhookAddress, ADestinationResolvingToLoopbackIsRefusedUnlessAllowed) {
  auto url = parse_webhook_url("http://localhost:9/hook").value();
  auto refused = check_destination(url, false);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().context.at("reason"), "private_address");
  EXPECT_NE(refused.error().message.find("loopback"), std::string::npos);
  EXPECT_NE(refused.error().message.find("webhooks.allow_private_networks"), std::string::npos);
  EXPECT_TRUE(check_destination(url, true).ok());
  auto literal = check_destination(parse_webhook_url("http://10.0.0.7/").value(), false);
  ASSERT_FALSE(literal.ok());
  EXPECT_EQ(literal.error().context.at("address"), "10.0.0.7");
  auto unknown = check_destination(parse_webhook_url("http://no-such-host.invalid/").value(), false);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().context.at("reason"), "unresolvable");
}

}  // namespace
}  // namespace deeplens::webhooks
