#include "common/log.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace deeplens {
namespace {

TEST(Log, FieldsFormAValidJsonObjectWithCorrelationFields) {
  const std::string body = format_log_fields(
      "stage.completed", {{"tenantId", "acme"}, {"imageId", "img_1"}, {"correlationId", "evt_1"},
                          {"durationMs", 12}, {"ok", true}, {"note", "quote \" and \n newline"}});
  auto j = nlohmann::json::parse("{" + body + "}");
  EXPECT_EQ(j["msg"], "stage.completed");
  EXPECT_EQ(j["tenantId"], "acme");
  EXPECT_EQ(j["imageId"], "img_1");
  EXPECT_EQ(j["correlationId"], "evt_1");
  EXPECT_EQ(j["durationMs"], 12);
  EXPECT_EQ(j["ok"], true);
  EXPECT_EQ(j["note"], "quote \" and \n newline");
}

TEST(Log, ParsesLevels) {
  LogLevel l;
  EXPECT_TRUE(parse_log_level("debug", l));
  EXPECT_EQ(l, LogLevel::kDebug);
  EXPECT_TRUE(parse_log_level("error", l));
  EXPECT_EQ(l, LogLevel::kError);
  EXPECT_FALSE(parse_log_level("loud", l));
}

}  // namespace
}  // namespace deeplens
