#include "common/ids.h"

#include <gtest/gtest.h>

#include <set>

namespace deeplens {
namespace {

TEST(Ids, NewIdsHaveTheSpecShapeAndAreVersion4) {
  SystemRandom random;
  IdGenerator ids(random);
  const auto img = ids.image_id();
  const auto evt = ids.event_id();
  EXPECT_TRUE(is_image_id(img)) << img;
  EXPECT_TRUE(is_event_id(evt)) << evt;
  EXPECT_FALSE(is_image_id(evt));
  EXPECT_EQ(img[4 + 14], '4') << "version nibble";
  EXPECT_NE(std::string("89ab").find(img[4 + 19]), std::string::npos) << "variant nibble";
}

TEST(Ids, SeededSourceIsDeterministic) {
  SeededRandom a(42), b(42);
  IdGenerator ga(a), gb(b);
  EXPECT_EQ(ga.event_id(), gb.event_id());
  EXPECT_EQ(ga.image_id(), gb.image_id());
}

TEST(Ids, DoNotRepeat) {
  SystemRandom random;
  IdGenerator ids(random);
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) EXPECT_TRUE(seen.insert(ids.uuid_v4()).second);
}

TEST(Ids, AcceptsTheSpecExamplesAndRejectsOtherShapes) {
  EXPECT_TRUE(is_event_id("evt_12345678-1234-1234-1234-123456789abc"));
  EXPECT_TRUE(is_image_id("img_98765432-4321-4321-4321-210987654321"));
  EXPECT_FALSE(is_image_id("img_98765432"));
  EXPECT_FALSE(is_event_id("evt_12345678-1234-1234-1234-123456789abg"));
  EXPECT_FALSE(is_event_id("12345"));
  EXPECT_FALSE(is_image_id("img_../../etc/passwd-0000-0000-000000000000"));
}

}  // namespace
}  // namespace deeplens
