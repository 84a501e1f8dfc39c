#include "events/codec.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "events/topics.h"

namespace deeplens {
namespace {

std::string fixture(const std::string& name) {
  std::ifstream in(std::string(DEEPLENS_SOURCE_DIR) + "/tests/data/events/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << name;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class SpecExampleRoundTrip : public ::testing::TestWithParam<const char*> {};

// The spec's examples decode, re-encode, and compare equal as JSON, field for field.
TEST_P(SpecExampleRoundTrip, DecodesAndReencodesToEqualJson) {
  const std::string text = fixture(GetParam());
  auto event = decode_any(text);
  ASSERT_TRUE(event.ok()) << event.error().to_string();
  const std::string reencoded = encode(*event);
  EXPECT_EQ(nlohmann::json::parse(reencoded), nlohmann::json::parse(text)) << reencoded;
  // And the normalised form is a fixed point.
  auto again = decode_any(reencoded);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(encode(*again), reencoded);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SpecExampleRoundTrip,
                         ::testing::Values("image_uploaded.json", "feature_extraction_requested.json",
                                           "vector_indexing_requested.json", "processing_completed.json",
                                           "processing_failed.json"));

TEST(Codec, DecodesTheSpecUploadedEventIntoTypedFields) {
  auto e = decode_image_uploaded(fixture("image_uploaded.json"));
  ASSERT_TRUE(e.ok()) << e.error().to_string();
  EXPECT_EQ(e->envelope.tenant_id, "acme-corp");
  EXPECT_FALSE(e->envelope.correlation_id.has_value());
  EXPECT_EQ(format_iso8601(e->envelope.timestamp), "2025-11-28T10:30:00Z");
  EXPECT_EQ(e->data.file_size, 2048576);
  EXPECT_EQ(e->data.metadata.width, 1920);
  EXPECT_EQ(e->data.metadata.color_profile, "sRGB");
  EXPECT_EQ(e->data.storage_provider.type, "azure_blob");
  EXPECT_EQ(e->processing_options.models, std::vector<std::string>{"resnet50"});
  EXPECT_EQ(e->processing_options.priority, Priority::kNormal);
  EXPECT_EQ(e->processing_options.generate_thumbnail, true);
}

TEST(Codec, VectorsKeepFloatValuesAndPrintShortDecimals) {
  auto e = decode_vector_indexing_requested(fixture("vector_indexing_requested.json"));
  ASSERT_TRUE(e.ok()) << e.error().to_string();
  ASSERT_EQ(e->data.feature_vector.size(), 8u);
  EXPECT_FLOAT_EQ(e->data.feature_vector[0], 0.123f);
  const std::string out = encode(*e);
  EXPECT_NE(out.find("[0.123,-0.456,0.789,0.25,-0.5,0.0625,1.5,-2.0]"), std::string::npos) << out;
}

TEST(Codec, TypedValuesRoundTripThroughJson) {
  ProcessingFailedEvent f;
  f.envelope = {"evt_5f0c2a9e-7b1d-4c3e-9a8f-0d6e4b2c1a77", *parse_iso8601("2026-01-02T03:04:05.678Z"),
                "t1", "evt_12345678-1234-1234-1234-123456789abc"};
  f.data.image_id = "img_98765432-4321-4321-4321-210987654321";
  f.data.stage = "vector_indexing";
  f.data.error_code = "INDEX_UNAVAILABLE";
  f.data.error_message = "index busy";
  f.data.attempt = 2;
  f.data.max_attempts = 3;
  f.data.retryable = true;
  f.data.next_attempt_at = *parse_iso8601("2026-01-02T03:04:07.678Z");
  f.data.original_topic = std::string(topics::kVectorsIndexing);
  f.data.original_event_json = R"({"eventType":"vector.indexing.requested","x":[1,2]})";
  auto back = decode_processing_failed(encode(f));
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  EXPECT_EQ(*back, f);
}

TEST(Codec, IgnoresUnknownFieldsForForwardCompatibility) {
  auto e = decode_any(fixture("forward_compat.json"));
  ASSERT_TRUE(e.ok()) << e.error().to_string();
  EXPECT_EQ(event_type(*e), event_types::kImageUploaded);
}

struct InvalidCase {
  const char* file;
  const char* field;  // the field the error must name
};

class RejectsInvalid : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(RejectsInvalid, WithAnErrorNamingTheField) {
  const auto& c = GetParam();
  auto e = decode_any(fixture(std::string("invalid/") + c.file));
  ASSERT_FALSE(e.ok()) << c.file << " was accepted";
  EXPECT_EQ(e.error().code, ErrorCode::kInvalidArgument);
  ASSERT_TRUE(e.error().context.count("field")) << e.error().to_string();
  EXPECT_EQ(e.error().context.at("field"), c.field) << e.error().to_string();
  EXPECT_NE(e.error().message.find(c.field), std::string::npos) << e.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Rules, RejectsInvalid,
    ::testing::Values(InvalidCase{"unknown_major_version.json", "eventVersion"},
                      InvalidCase{"missing_image_id.json", "data.imageId"},
                      InvalidCase{"wrong_type_file_size.json", "data.fileSize"},
                      InvalidCase{"nan_in_vector.json", "data.featureVector[2]"},
                      InvalidCase{"empty_vector.json", "data.featureVector"},
                      InvalidCase{"dimension_mismatch.json", "data.featureVector"},
                      InvalidCase{"missing_retry_policy.json", "retryPolicy"},
                      InvalidCase{"bad_timestamp.json", "timestamp"},
                      InvalidCase{"bad_event_id.json", "eventId"}),
    [](const ::testing::TestParamInfo<InvalidCase>& info) {
      std::string name = info.param.file;
      name = name.substr(0, name.find('.'));
      return name;
    });

// Found with tests/fuzz (fuzz_codec's round-trip check): integers beyond int were accepted into
// int fields and wrapped (a width of 2^31 became -2^31, which the next decode refused).
TEST(Codec, RejectsIntegersBeyondTheRangeOfTheirField) {
  std::string text = fixture("image_uploaded.json");
  text.replace(text.find("1920"), 4, "2147483648");
  auto e = decode_image_uploaded(text);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().context.at("field"), "data.metadata.width");
  text = fixture("processing_failed.json");
  const auto attempt = text.find("\"attempt\"");
  ASSERT_NE(attempt, std::string::npos);
  text.insert(text.find(':', attempt) + 1, "4294967297, \"ignored\":");  // 2^32 + 1 would wrap to 1
  auto f = decode_processing_failed(text);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.error().context.at("field"), "data.attempt");
  text = fixture("image_uploaded.json");
  text.replace(text.find("1920"), 4, "2147483647");
  ASSERT_TRUE(decode_image_uploaded(text).ok());
}

TEST(Codec, RejectsInfinityFromOverflowingNumbers) {
  std::string text = fixture("vector_indexing_requested.json");
  text.replace(text.find("0.789"), 5, "1e39");
  auto e = decode_vector_indexing_requested(text);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().context.at("field"), "data.featureVector[2]");
}

// Found by tests/fuzz (fuzz_codec): a number beyond double made nlohmann::json throw out_of_range,
// which nothing caught, so one such event ended the consuming process.
TEST(Codec, RejectsNumbersBeyondDoubleWithAnErrorInsteadOfThrowing) {
  std::string text = fixture("image_uploaded.json");
  text.replace(text.find("2048576"), 7, "1e400");
  auto e = decode_any(text);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().context.at("field"), "data.fileSize");
  EXPECT_FALSE(decode_image_uploaded(text).ok());
  EXPECT_FALSE(decode_any("87677e767777").ok());
}

TEST(Codec, RejectsTheWrongEventTypeForATypedDecoder) {
  auto e = decode_processing_completed(fixture("image_uploaded.json"));
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().context.at("field"), "eventType");
}

TEST(Codec, RejectsUnknownEventTypesAndNonObjects) {
  auto e = decode_any(R"({"eventType":"image.deleted"})");
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().context.at("field"), "eventType");
  EXPECT_FALSE(decode_any("[1,2,3]").ok());
  EXPECT_FALSE(decode_any("").ok());
}

TEST(Codec, AcceptsNewerMinorVersions) {
  std::string text = fixture("image_uploaded.json");
  text.replace(text.find("\"1.0\""), 5, "\"1.7\"");
  auto e = decode_any(text);
  ASSERT_TRUE(e.ok()) << e.error().to_string();
  EXPECT_NE(encode(*e).find("\"eventVersion\":\"1.0\""), std::string::npos);
}

}  // namespace
}  // namespace deeplens
