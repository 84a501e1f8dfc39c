#include "api/route_match.h"

#include <gtest/gtest.h>

namespace deeplens::api {
namespace {

TEST(RouteMatch, APlaceholderTakesOneNonEmptySegment) {
  std::map<std::string, std::string> params;
  ASSERT_TRUE(match_route_pattern("/api/v1/images/{id}/status", "/api/v1/images/img_1/status", params));
  EXPECT_EQ(params, (std::map<std::string, std::string>{{"id", "img_1"}}));
  EXPECT_FALSE(match_route_pattern("/api/v1/images/{id}/status", "/api/v1/images//status", params));
  EXPECT_FALSE(match_route_pattern("/api/v1/images/{id}", "/api/v1/images/a/b", params));
  EXPECT_FALSE(match_route_pattern("/api/v1/images/{id}", "/api/v1/images", params));
}

TEST(RouteMatch, LiteralsMatchExactlyAndAFailedMatchLeavesParamsAlone) {
  std::map<std::string, std::string> params{{"id", "kept"}};
  EXPECT_TRUE(match_route_pattern("/healthz", "/healthz", params));
  EXPECT_TRUE(params.empty());  // a match replaces what params held
  params = {{"id", "kept"}};
  EXPECT_FALSE(match_route_pattern("/healthz", "/healthz/", params));
  EXPECT_FALSE(match_route_pattern("/healthz", "/health", params));
  EXPECT_FALSE(match_route_pattern("/images/{id", "/images/x", params));  // an unclosed placeholder
  EXPECT_EQ(params.at("id"), "kept");
}

}  // namespace
}  // namespace deeplens::api
