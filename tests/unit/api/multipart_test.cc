#include "api/multipart.h"

#include <gtest/gtest.h>

#include <string>

namespace deeplens::api {
namespace {

constexpr const char* kType = "multipart/form-data; boundary=b";

TEST(Multipart, SplitsPartsWithTheirNamesFileNamesAndTypes) {
  auto body = MultipartBody::parse(
      "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
      "\xFF\xD8\r\n--b\r\nContent-Disposition: form-data; name=topK\r\n\r\n10\r\n--b--\r\n",
      kType);
  ASSERT_TRUE(body.ok()) << body.error().to_string();
  ASSERT_EQ((*body)->parts().size(), 2u);
  const MultipartPart& file = (*body)->parts()[0];
  EXPECT_EQ(file.name, "file");
  EXPECT_TRUE(file.has_filename);
  EXPECT_EQ(file.filename, "a.jpg");
  EXPECT_EQ(file.content_type, "image/jpeg");
  EXPECT_EQ(file.data, "\xFF\xD8");
  ASSERT_NE((*body)->find("topK"), nullptr);
  EXPECT_EQ((*body)->find("topK")->data, "10");
}

TEST(Multipart, RefusesABodyCutBeforeItsClosingBoundary) {
  auto body = MultipartBody::parse("--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nhalf an ima", kType);
  ASSERT_FALSE(body.ok());
  EXPECT_EQ(body.error().code, ErrorCode::kInvalidArgument);
}

// Found by tests/fuzz (fuzz_multipart, corpus duplicate_headers.txt): with two Content-Disposition
// headers the part kept the first one's filename while has_filename came from the second.
TEST(Multipart, ARepeatedContentDispositionReplacesTheEarlierOneWhole) {
  auto body = MultipartBody::parse(
      "--b\r\nContent-Disposition: form-data; name=\"a\"; filename=\"x.jpg\"\r\n"
      "Content-Disposition: form-data; name=\"b\"\r\n\r\ndata\r\n--b--\r\n",
      kType);
  ASSERT_TRUE(body.ok()) << body.error().to_string();
  ASSERT_EQ((*body)->parts().size(), 1u);
  const MultipartPart& part = (*body)->parts()[0];
  EXPECT_EQ(part.name, "b");
  EXPECT_FALSE(part.has_filename);
  EXPECT_EQ(part.filename, "");
}

}  // namespace
}  // namespace deeplens::api
