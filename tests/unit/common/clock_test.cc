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

// Found with tests/fuzz (fuzz_codec's round-trip check): an offset carried the first and last
// representable days out of the four-digit years format_iso8601 writes ("-001-12-31T23:59:00Z"),
// so an event accepted once could not be decoded after being re-encoded.
TEST(Iso8601, RejectsTimesThatAnOffsetMovesOutOfFourDigitYears) {
  for (const char* bad : {"0000-01-01T00:00:00+00:01", "9999-12-31T23:59:59-01:00"}) {
    auto t = parse_iso8601(bad);
    EXPECT_FALSE(t.ok()) << bad << " -> " << format_iso8601(*t);
  }
  for (const char* good : {"0000-01-01T00:00:00Z", "0000-01-01T00:01:00+00:01", "9999-12-31T23:59:59.999Z"}) {
    auto t = parse_iso8601(good);
    ASSERT_TRUE(t.ok()) << good;
    auto again = parse_iso8601(format_iso8601(*t));
    ASSERT_TRUE(again.ok()) << format_iso8601(*t);
    EXPECT_EQ(*again, *t);
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
