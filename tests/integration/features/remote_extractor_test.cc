// The remote extractor against a real HTTP server: tests/support/fake_extraction_service.py,
// started per test suite on a free port of 127.0.0.1 and stopped afterwards.
#include "features/remote/remote_extractor.h"

#include <gtest/gtest.h>

#include <thread>

#include "feature_test_support.h"
#include "features/model_spec.h"

namespace deeplens {
namespace {

using namespace deeplens::testing;

class RemoteExtractorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    server_ = new ChildProcess();
    std::string error;
    ASSERT_TRUE(server_->start({debian_python(),
                                std::string(DEEPLENS_SOURCE_DIR) + "/tests/support/fake_extraction_service.py",
                                "--request-log", (dir_->path() / "requests.jsonl").string()},
                               &error))
        << error;
    const auto line = server_->read_line(std::chrono::seconds(20));
    ASSERT_TRUE(line && line->starts_with("PORT ")) << "the fake service did not start";
    base_url_ = "http://127.0.0.1:" + line->substr(5);
  }
  static void TearDownTestSuite() {
    delete server_;  // stops it
    server_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }

  static std::unique_ptr<Extractor> make(const std::string& mode, int dimension, bool normalize = true,
                                         int timeout_ms = 5000) {
    auto spec = parse_model_spec({{"name", "resnet50"},
                                  {"kind", "remote"},
                                  {"version", "v2.7"},
                                  {"url", base_url_ + "/" + mode},
                                  {"dimension", std::to_string(dimension)},
                                  {"normalize", normalize ? "true" : "false"},
                                  {"timeout_ms", std::to_string(timeout_ms)}});
    EXPECT_TRUE(spec.ok()) << spec.error().to_string();
    if (!spec.ok()) return nullptr;
    auto e = make_remote_extractor(*spec);
    EXPECT_TRUE(e.ok()) << e.error().to_string();
    return e.ok() ? std::move(*e) : nullptr;
  }

  static Result<std::vector<std::vector<float>>> run(Extractor& e, std::string_view bytes,
                                                     std::string_view image_id = "img_test") {
    const ExtractorInput in[] = {{nullptr, bytes, image_id}};
    return e.extract(in);
  }

  static TempDir* dir_;
  static ChildProcess* server_;
  static std::string base_url_;
};
TempDir* RemoteExtractorTest::dir_ = nullptr;
ChildProcess* RemoteExtractorTest::server_ = nullptr;
std::string RemoteExtractorTest::base_url_;

TEST_F(RemoteExtractorTest, SendsTheOriginalBytesAndReturnsTheServicesVector) {
  auto e = make("ok/dim/4", 4);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->info().name, "resnet50");
  EXPECT_EQ(e->info().version, "v2.7");
  EXPECT_EQ(e->info().dimension, 4);
  EXPECT_EQ(e->info().input_width, 0) << "takes encoded bytes";
  EXPECT_EQ(e->info().input_height, 0);

  // The fake service returns the decoded bytes as numbers, normalised: [3,4,0,0] -> [.6,.8,0,0].
  auto r = run(*e, std::string_view("\x03\x04", 2), "img_abc");
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0], (std::vector<float>{0.6f, 0.8f, 0.0f, 0.0f}));

  const auto log = read_lines(dir_->path() / "requests.jsonl");
  ASSERT_FALSE(log.empty());
  EXPECT_NE(log.back().find("\"imageId\": \"img_abc\""), std::string::npos) << log.back();
  EXPECT_NE(log.back().find("\"modelName\": \"resnet50\""), std::string::npos) << log.back();
  EXPECT_NE(log.back().find("\"normalize\": true"), std::string::npos) << log.back();
  EXPECT_NE(log.back().find("\"imageBytes\": 2"), std::string::npos) << log.back();
  EXPECT_NE(log.back().find("\"contentType\": \"application/json\""), std::string::npos) << log.back();
}

// Every byte value and every base64 padding case survives the trip.
TEST_F(RemoteExtractorTest, Base64CarriesEveryByteExactly) {
  auto e = make("ok/dim/300", 300, /*normalize=*/false);
  ASSERT_TRUE(e);
  for (size_t len : {1u, 2u, 3u, 4u, 5u, 256u, 299u, 300u}) {
    std::string bytes;
    for (size_t i = 0; i < len; ++i) bytes.push_back(static_cast<char>((i * 7 + 255) & 0xff));
    auto r = run(*e, bytes);
    ASSERT_TRUE(r.ok()) << len << ": " << r.error().to_string();
    std::vector<float> expected(300, 0.0f);
    for (size_t i = 0; i < len; ++i) expected[i] = static_cast<float>(static_cast<uint8_t>(bytes[i]));
    EXPECT_EQ((*r)[0], expected) << "length " << len;
  }
}

TEST_F(RemoteExtractorTest, ExtractsABatchOneRequestPerImageInOrder) {
  auto e = make("ok/dim/2", 2, /*normalize=*/false);
  ASSERT_TRUE(e);
  const ExtractorInput in[] = {{nullptr, "\x01\x02", "a"}, {nullptr, "\x05\x06", "b"}, {nullptr, "\x09", "c"}};
  auto r = e->extract(in);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(*r, (std::vector<std::vector<float>>{{1, 2}, {5, 6}, {9, 0}}));
}

TEST_F(RemoteExtractorTest, ConcurrentCallersShareTheExtractor) {
  auto e = make("ok/dim/2", 2, /*normalize=*/false);
  ASSERT_TRUE(e);
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        const std::string bytes = {static_cast<char>(t), static_cast<char>(i)};
        auto r = run(*e, bytes);
        if (!r.ok() || (*r)[0] != std::vector<float>{static_cast<float>(t), static_cast<float>(i)})
          ++failures[static_cast<size_t>(t)];
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

TEST_F(RemoteExtractorTest, SlowServiceTimesOut) {
  auto e = make("slow/3000", 4, true, /*timeout_ms=*/300);
  ASSERT_TRUE(e);
  Result<std::vector<std::vector<float>>> r = Error();
  const double ms = time_ms([&] { r = run(*e, "x", "img_slow"); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kTimeout) << r.error().to_string();
  EXPECT_EQ(r.error().context.at("image_id"), "img_slow");
  EXPECT_NE(r.error().message.find("timeout_ms = 300"), std::string::npos) << r.error().message;
  EXPECT_LT(ms, 2500) << "gave up at the deadline, not when the server answered";
}

TEST_F(RemoteExtractorTest, ServerErrorIsUnavailableAndClientErrorIsInvalidArgument) {
  auto e500 = make("status/500", 4);
  ASSERT_TRUE(e500);
  auto r = run(*e500, "x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(r.error().context.at("http_status"), "500");
  EXPECT_NE(r.error().message.find("simulated failure 500"), std::string::npos) << r.error().message;

  auto e503 = make("status/503", 4);
  r = run(*e503, "x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);

  auto e422 = make("status/422", 4);
  r = run(*e422, "x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(r.error().context.at("http_status"), "422");

  auto e404 = make("no-such-mode", 4);
  r = run(*e404, "x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().context.at("http_status"), "404");
}

TEST_F(RemoteExtractorTest, AnswersThatBreakTheContractAreErrors) {
  struct Case {
    const char* mode;
    int dimension;
    const char* expect;
  };
  for (const Case& c : {Case{"badjson", 4, "not a JSON object"}, Case{"nofeatures", 4, "no \"features\""},
                        Case{"strings", 4, "non-number"}, Case{"ok/dim/3", 4, "3 features"}}) {
    auto e = make(c.mode, c.dimension);
    ASSERT_TRUE(e);
    auto r = run(*e, "abc");
    ASSERT_FALSE(r.ok()) << c.mode;
    EXPECT_EQ(r.error().code, ErrorCode::kInternal) << c.mode;
    EXPECT_NE(r.error().message.find(c.expect), std::string::npos) << c.mode << ": " << r.error().message;
    EXPECT_EQ(r.error().context.at("model"), "resnet50");
  }
}

TEST_F(RemoteExtractorTest, RefusedConnectionIsUnavailable) {
  // A port that was free a moment ago: start a second service, note its port, stop it.
  ChildProcess other;
  std::string error;
  ASSERT_TRUE(other.start({debian_python(), std::string(DEEPLENS_SOURCE_DIR) + "/tests/support/fake_extraction_service.py"},
                          &error));
  const auto line = other.read_line(std::chrono::seconds(20));
  ASSERT_TRUE(line && line->starts_with("PORT "));
  other.stop();

  auto spec = parse_model_spec({{"name", "gone"},
                                {"kind", "remote"},
                                {"url", "http://127.0.0.1:" + line->substr(5)},
                                {"dimension", "4"},
                                {"timeout_ms", "2000"}});
  ASSERT_TRUE(spec.ok());
  auto e = make_remote_extractor(*spec);
  ASSERT_TRUE(e.ok()) << "creating does not contact the service";
  auto r = run(**e, "x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable) << r.error().to_string();
  EXPECT_NE(r.error().message.find("cannot connect"), std::string::npos) << r.error().message;
}

TEST_F(RemoteExtractorTest, InputWithoutEncodedBytesIsRejected) {
  auto e = make("ok/dim/4", 4);
  ASSERT_TRUE(e);
  auto r = run(*e, "");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace deeplens
