#include "common/clock.h"

#include <gtest/gtest.h>

namespace deeplens {
namespace {

TEST(Iso8601, FormatsWholeSecondsWithoutFraction) {
  auto t = parse_iso8601("2025-11-28T10:30:00Z");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(format_iso8601(*t), "2025-11-28T10:30:00Z");
}

TEST(Iso8601, KeepsMillisecondsAndNormalisesOffsetsToUtc) {
  auto t = parse_iso8601("2025-11-28T12:30:00.25+02:00");
  ASSERT_TRUE(t.ok()) << t.error().to_string();
  EXPECT_EQ(format_iso8601(*t), "2025-11-28T10:30:00.250Z");
}

TEST(Iso8601, RejectsMissingZoneBadDatesAndGarbage) {
  for (const char* bad : {"2025-11-28T10:30:00", "2025-02-30T10:30:00Z", "yesterday", "",
                          "2025-11-28 10:30:00Z", "2025-11-28T10:30:00Zjunk", "2025-11-28T25:00:00Z"}) {
    auto t = parse_iso8601(bad);
    EXPECT_FALSE(t.ok()) << bad;
    if (!t.ok()) {
      EXPECT_EQ(t.error().code, ErrorCode::kInvalidArgument);
    }
  }
}

TEST(ManualClock, MovesOnlyWhenAdvanced) {
  ManualClock clock(*parse_iso8601("2026-01-01T00:00:00Z"));
  const auto t0 = clock.now();
  EXPECT_EQ(clock.now(), t0);
  clock.advance(std::chrono::milliseconds(1500));
  EXPECT_EQ(format_iso8601(clock.now()), "2026-01-01T00:00:01.500Z");
}

}  // namespace
}  // namespace deeplens
