// The pure Azure pieces: connection strings, the key -> container/blob mapping, Shared Key's
// StringToSign. Signatures themselves are checked end to end against Azurite (integration tier).
#include "blob/azure/azure_rest.h"

#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "common/base64.h"

namespace deeplens::azure {
namespace {

const std::string kKey = "c2VjcmV0LWtleS1ieXRlcw==";  // base64("secret-key-bytes")

TEST(ConnectionString, AccountKeyAndBlobEndpoint) {
  auto a = parse_connection_string("DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=" + kKey +
                                   ";BlobEndpoint=http://127.0.0.1:10000/acct/;");
  ASSERT_TRUE(a.ok()) << a.error().to_string();
  EXPECT_EQ(a->name, "acct");
  EXPECT_EQ(a->key, "secret-key-bytes");
  EXPECT_EQ(a->endpoint, "http://127.0.0.1:10000/acct");  // trailing '/' dropped
}

TEST(ConnectionString, EndpointFromProtocolAndSuffixAndCaseInsensitiveNames) {
  auto a = parse_connection_string("accountname=prod;ACCOUNTKEY=" + kKey + ";EndpointSuffix=core.chinacloudapi.cn");
  ASSERT_TRUE(a.ok()) << a.error().to_string();
  EXPECT_EQ(a->endpoint, "https://prod.blob.core.chinacloudapi.cn");
  auto b = parse_connection_string("AccountName=prod;AccountKey=" + kKey);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->endpoint, "https://prod.blob.core.windows.net");
}

TEST(ConnectionString, DevelopmentStorageIsAzuritesAccount) {
  auto a = parse_connection_string("UseDevelopmentStorage=true");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->name, "devstoreaccount1");
  EXPECT_EQ(a->endpoint, "http://127.0.0.1:10000/devstoreaccount1");
  EXPECT_EQ(a->key.size(), 64u);
}

TEST(ConnectionString, BadOnesSayWhatIsWrongAndNeverQuoteTheKey) {
  struct Case {
    std::string text, expect;
  } cases[] = {
      {"", "empty"},
      {"AccountName=a", "AccountKey is missing"},
      {"AccountKey=" + kKey, "AccountName is missing"},
      {"AccountName=a;AccountKey=not*base64!", "not base64"},
      {"AccountName=a;SharedAccessSignature=sv=2020&sig=abc", "SharedAccessSignature is not supported"},
      {"AccountName=a;AccountKey=" + kKey + ";BlobEndpoint=ftp://x", "http:// or https://"},
      {"AccountName=a;AccountKey=" + kKey + ";DefaultEndpointsProtocol=gopher", "must be https or http"},
      {"garbage", "without '='"},
  };
  for (const auto& c : cases) {
    auto a = parse_connection_string(c.text);
    ASSERT_FALSE(a.ok()) << c.text;
    EXPECT_EQ(a.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(a.error().message.find(c.expect), std::string::npos) << c.text << " -> " << a.error().message;
    EXPECT_EQ(a.error().to_string().find(kKey), std::string::npos) << a.error().to_string();
  }
}

// Azure's container rules: 3-63 characters, lowercase letters, digits and single hyphens, starting
// with a letter or digit and not ending with a hyphen.
bool valid_container(const std::string& name) {
  static const std::regex rule("^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$");
  return name.size() >= 3 && name.size() <= 63 && std::regex_match(name, rule);
}

TEST(ContainerNames, SpecNameWhenValidOtherwiseHashedAndAlwaysValidAndDistinct) {
  EXPECT_EQ(container_for_tenant("acme-corp"), "acme-corp-images");  // the spec's example
  EXPECT_EQ(container_for_tenant("default"), "default-images");
  const std::vector<std::string> tenants = {
      "acme-corp", "acmecorp", "a", "a--b", "a-b", "trailing-", "x", std::string(56, 'q'), std::string(57, 'q'),
      std::string(63, 'z'), "h0123456789abcdef01234567", "h0123456789abcdef0123456", "0", "9-9"};
  std::set<std::string> seen;
  for (const auto& t : tenants) {
    const auto c = container_for_tenant(t);
    EXPECT_TRUE(valid_container(c)) << t << " -> " << c;
    EXPECT_TRUE(seen.insert(c).second) << "two tenants share " << c;
  }
  // A tenant named like a hashed container cannot take over the one another tenant hashes to.
  const std::string hashed = container_for_tenant("a--b");
  const std::string lookalike = hashed.substr(0, hashed.size() - std::string("-images").size());
  EXPECT_NE(container_for_tenant(lookalike), hashed);
}

TEST(Locate, ImagesAtTheContainerRootOtherKindsInAFolderAndBack) {
  auto img = locate("tenant-acme-corp/images/2025/11/28/img_1.jpg");
  ASSERT_TRUE(img.ok());
  EXPECT_EQ(img->tenant, "acme-corp");
  EXPECT_EQ(img->container, "acme-corp-images");
  EXPECT_EQ(img->blob, "2025/11/28/img_1.jpg");  // the spec's blobName
  EXPECT_EQ(key_for(img->tenant, img->blob), "tenant-acme-corp/images/2025/11/28/img_1.jpg");
  auto thumb = locate("tenant-acme-corp/thumbnails/2025/11/28/img_1.jpg");
  ASSERT_TRUE(thumb.ok());
  EXPECT_EQ(thumb->container, "acme-corp-images");
  EXPECT_EQ(thumb->blob, "thumbnails/2025/11/28/img_1.jpg");
  EXPECT_EQ(key_for(thumb->tenant, thumb->blob), "tenant-acme-corp/thumbnails/2025/11/28/img_1.jpg");
}

TEST(Locate, RefusesKeysOutsideTheLayout) {
  for (const char* key : {"", "images/2025/a.jpg", "tenant-/images/a.jpg", "tenant-a", "tenant-a/images",
                          "tenant-a/../b/images/x", "tenant-a/images/../../x", "tenant-A/images/x.jpg",
                          "tenant-a/images/x y.jpg", "tenant-a/2025/x.jpg", "/tenant-a/images/x", "tenant-a/images/x/"}) {
    auto l = locate(key);
    EXPECT_FALSE(l.ok()) << key;
    if (!l.ok()) {
      EXPECT_EQ(l.error().code, ErrorCode::kInvalidArgument) << key;
    }
  }
}

TEST(SharedKey, StringToSignFollowsTheDocumentedLayout) {
  SignedRequest r;
  r.method = "PUT";
  r.path = "/devstoreaccount1/acme-images/2025/11/28/img_1.jpg";  // path-style: the account is in the path
  r.query = {{"comp", "block"}, {"blockid", "MDAwMDAwMDAw"}};
  r.headers = {{"Content-Type", "application/octet-stream"},
               {"Content-MD5", "abc=="},
               {"x-ms-version", "2021-12-02"},
               {"X-MS-Date", "Wed, 02 Dec 2026 23:00:00 GMT"},
               {"x-ms-blob-type", " BlockBlob "}};
  r.content_length = 11;
  EXPECT_EQ(string_to_sign(r, "devstoreaccount1"),
            "PUT\n"
            "\n"        // Content-Encoding
            "\n"        // Content-Language
            "11\n"      // Content-Length
            "abc==\n"   // Content-MD5
            "application/octet-stream\n"
            "\n\n\n\n\n\n"  // Date, If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since, Range
            "x-ms-blob-type:BlockBlob\n"
            "x-ms-date:Wed, 02 Dec 2026 23:00:00 GMT\n"
            "x-ms-version:2021-12-02\n"
            "/devstoreaccount1/devstoreaccount1/acme-images/2025/11/28/img_1.jpg\n"
            "blockid:MDAwMDAwMDAw\n"
            "comp:block");
}

TEST(SharedKey, ZeroLengthIsAnEmptyLineAndTheHeaderIsTheHmacOfIt) {
  SignedRequest r;
  r.method = "GET";
  r.path = "/";
  r.query = {{"include", "metadata"}, {"comp", "list"}};
  r.headers = {{"x-ms-date", "Wed, 02 Dec 2026 23:00:00 GMT"}, {"x-ms-version", "2021-12-02"}};
  const std::string s = string_to_sign(r, "acct");
  EXPECT_EQ(s, "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Wed, 02 Dec 2026 23:00:00 GMT\nx-ms-version:2021-12-02\n/acct/\ncomp:list\ninclude:metadata");
  Account a{"acct", "secret-key-bytes", "https://acct.blob.core.windows.net"};
  const std::string header = authorization(r, a);
  ASSERT_EQ(header.rfind("SharedKey acct:", 0), 0u) << header;
  auto mac = base64_decode(header.substr(std::string("SharedKey acct:").size()));
  ASSERT_TRUE(mac.ok());
  EXPECT_EQ(mac->size(), 32u);  // HMAC-SHA256
  a.key = "another-key";
  EXPECT_NE(authorization(r, a), header);
}

TEST(Helpers, HttpDatePercentEncodingAndContentMd5) {
  EXPECT_EQ(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
  EXPECT_EQ(http_date(1795993200), "Sun, 29 Nov 2026 23:00:00 GMT");
  EXPECT_EQ(percent_encode("a b/c+d=", false), "a%20b%2Fc%2Bd%3D");
  EXPECT_EQ(percent_encode("2025/11/x.jpg", true), "2025/11/x.jpg");
  EXPECT_EQ(content_md5(""), "1B2M2Y8AsgTpgAmY7PhCfg==");  // RFC 1321's MD5("") in base64
  EXPECT_EQ(content_md5("abc"), "kAFQmDzST7DWlj99KOF/cg==");
}

}  // namespace
}  // namespace deeplens::azure
