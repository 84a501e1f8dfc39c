// The built-in descriptor on synthetic pixels: its contract (size, unit length, determinism,
// errors naming the input) and that it measures what it claims (colour, layout, edges).
#include "features/builtin/builtin_descriptor.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace deeplens {
namespace {

constexpr int kSize = 128;

struct Rgb {
  uint8_t r, g, b;
};

DecodedImage paint(int w, int h, const std::function<Rgb(int, int)>& colour_at) {
  DecodedImage image;
  image.width = w;
  image.height = h;
  image.rgb.resize(static_cast<size_t>(w) * static_cast<size_t>(h) * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const Rgb c = colour_at(x, y);
      const size_t i = (static_cast<size_t>(y) * static_cast<size_t>(w) + static_cast<size_t>(x)) * 3;
      image.rgb[i] = c.r;
      image.rgb[i + 1] = c.g;
      image.rgb[i + 2] = c.b;
    }
  }
  return image;
}

// A red disc on a blue background, centred at (cx, cy).
DecodedImage disc(int cx, int cy, Rgb inside = {220, 30, 30}, Rgb outside = {30, 60, 200}) {
  return paint(kSize, kSize, [=](int x, int y) {
    const int dx = x - cx;
    const int dy = y - cy;
    return dx * dx + dy * dy < 30 * 30 ? inside : outside;
  });
}

DecodedImage stripes(bool vertical, Rgb a, Rgb b) {
  return paint(kSize, kSize, [=](int x, int y) { return ((vertical ? x : y) / 8) % 2 ? a : b; });
}

DecodedImage noise(uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  return paint(kSize, kSize, [&](int, int) {
    return Rgb{static_cast<uint8_t>(byte(rng)), static_cast<uint8_t>(byte(rng)),
               static_cast<uint8_t>(byte(rng))};
  });
}

std::vector<float> describe(const DecodedImage& image) {
  std::vector<float> v(kBuiltinDescriptorDimension);
  Status s = compute_builtin_descriptor(image, v);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().to_string());
  return v;
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d += static_cast<double>(a[i]) * b[i];
  return d;
}

double norm(const std::vector<float>& v) { return std::sqrt(dot(v, v)); }

TEST(BuiltinDescriptor, InfoDescribesAWeightFreeModelOf512Floats) {
  auto extractor = make_builtin_descriptor();
  const ModelInfo& info = extractor->info();
  EXPECT_EQ(info.name, "builtin");
  EXPECT_EQ(info.version, "1.0");
  EXPECT_EQ(info.dimension, 512);
  EXPECT_EQ(info.dimension, kBuiltinDescriptorDimension);
  EXPECT_EQ(info.input_width, 128);
  EXPECT_EQ(info.input_height, 128);
  EXPECT_TRUE(info.normalize);

  auto small = make_builtin_descriptor({.input_size = 64});
  EXPECT_EQ(small->info().input_width, 64);
  EXPECT_EQ(small->info().input_height, 64);
}

TEST(BuiltinDescriptor, VectorsAreFiniteAndUnitLengthEvenForFlatImages) {
  const std::vector<DecodedImage> images = {
      disc(64, 64),
      noise(1),
      paint(kSize, kSize, [](int, int) { return Rgb{0, 0, 0}; }),
      paint(kSize, kSize, [](int, int) { return Rgb{255, 255, 255}; }),
      paint(kSize, kSize, [](int, int) { return Rgb{128, 128, 128}; }),
      paint(kSize, kSize, [](int, int) { return Rgb{255, 0, 0}; }),
      paint(17, 300, [](int x, int y) { return Rgb{static_cast<uint8_t>(x * 15), static_cast<uint8_t>(y % 256), 7}; }),
  };
  for (const auto& image : images) {
    const std::vector<float> v = describe(image);
    ASSERT_EQ(v.size(), 512u);
    for (float x : v) ASSERT_TRUE(std::isfinite(x));
    EXPECT_NEAR(norm(v), 1.0, 1e-5);
  }
}

TEST(BuiltinDescriptor, IsDeterministicAndBatchesKeepInputOrder) {
  auto extractor = make_builtin_descriptor();
  const DecodedImage a = disc(50, 60);
  const DecodedImage b = stripes(true, {0, 200, 0}, {250, 250, 250});
  const DecodedImage c = noise(7);
  std::vector<ExtractorInput> batch = {{&a, {}, "img_a"}, {&b, {}, "img_b"}, {&c, {}, "img_c"}};
  auto vectors = extractor->extract(batch);
  ASSERT_TRUE(vectors.ok()) << vectors.error().to_string();
  ASSERT_EQ(vectors->size(), 3u);
  EXPECT_EQ((*vectors)[0], describe(a));
  EXPECT_EQ((*vectors)[1], describe(b));
  EXPECT_EQ((*vectors)[2], describe(c));
}

TEST(BuiltinDescriptor, SafeToCallFromSeveralThreadsAtOnce) {
  auto extractor = make_builtin_descriptor();
  const DecodedImage image = noise(3);
  const std::vector<float> expected = describe(image);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        ExtractorInput input{&image, {}, "img"};
        auto v = extractor->extract(std::span(&input, 1));
        if (!v.ok() || (*v)[0] != expected) ++mismatches[static_cast<size_t>(t)];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

TEST(BuiltinDescriptor, ASmallShiftStaysCloserThanADifferentPicture) {
  const std::vector<float> original = describe(disc(64, 64));
  const std::vector<float> shifted = describe(disc(68, 61));
  const std::vector<float> other = describe(stripes(false, {30, 60, 200}, {220, 30, 30}));
  EXPECT_GT(dot(original, shifted), 0.8);
  EXPECT_GT(dot(original, shifted), dot(original, other) + 0.3);
}

TEST(BuiltinDescriptor, SeesColourLayoutAndEdgeOrientation) {
  const std::vector<float> red_disc = describe(disc(64, 64));
  // Same layout, other colours.
  const std::vector<float> green_disc = describe(disc(64, 64, {30, 200, 40}, {230, 200, 20}));
  // Same colours, the disc moved to a corner.
  const std::vector<float> moved = describe(disc(30, 30));
  EXPECT_LT(dot(red_disc, green_disc), 0.75);
  EXPECT_LT(dot(red_disc, moved), 0.9);

  // Identical colour statistics, only the edge orientation differs.
  const std::vector<float> vertical = describe(stripes(true, {0, 0, 0}, {255, 255, 255}));
  const std::vector<float> horizontal = describe(stripes(false, {0, 0, 0}, {255, 255, 255}));
  const std::vector<float> vertical_again = describe(stripes(true, {10, 10, 10}, {245, 245, 245}));
  EXPECT_GT(dot(vertical, vertical_again), 0.95);
  EXPECT_LT(dot(vertical, horizontal), 0.75);
}

TEST(BuiltinDescriptor, UnrelatedNoiseImagesAreNotSimilar) {
  // Mean-centred blocks: two random images sit near the middle of the cosine range, well below a
  // near-duplicate, rather than near 1 as raw positive histograms would put them.
  const std::vector<float> a = describe(noise(11));
  const std::vector<float> b = describe(disc(64, 64));
  EXPECT_LT(dot(a, b), 0.5);
}

TEST(BuiltinDescriptor, RefusesPixelsOfTheWrongSizeNamingTheInput) {
  auto extractor = make_builtin_descriptor();
  const DecodedImage ok = disc(64, 64);
  const DecodedImage wrong = paint(100, 100, [](int, int) { return Rgb{1, 2, 3}; });
  std::vector<ExtractorInput> batch = {{&ok, {}, "img_ok"}, {&wrong, {}, "img_wrong"}};
  auto r = extractor->extract(batch);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(r.error().context.at("index"), "1");
  EXPECT_EQ(r.error().context.at("image_id"), "img_wrong");
  EXPECT_NE(r.error().message.find("100x100"), std::string::npos) << r.error().message;

  ExtractorInput no_pixels{nullptr, "\xFF\xD8", "img_bytes_only"};
  auto r2 = extractor->extract(std::span(&no_pixels, 1));
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.error().context.at("image_id"), "img_bytes_only");

  DecodedImage short_buffer = disc(64, 64);
  short_buffer.rgb.resize(100);
  ExtractorInput short_input{&short_buffer, {}, "img_short"};
  auto r3 = extractor->extract(std::span(&short_input, 1));
  ASSERT_FALSE(r3.ok());
  EXPECT_EQ(r3.error().code, ErrorCode::kInvalidArgument);

  std::vector<float> out(kBuiltinDescriptorDimension);
  EXPECT_FALSE(compute_builtin_descriptor(paint(8, 8, [](int, int) { return Rgb{}; }), out).ok());
  std::vector<float> too_short(10);
  EXPECT_FALSE(compute_builtin_descriptor(ok, too_short).ok());
}

TEST(BuiltinDescriptor, EmptyBatchGivesNoVectors) {
  auto extractor = make_builtin_descriptor();
  auto r = extractor->extract({});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
}

TEST(L2Normalize, ScalesToUnitLengthAndLeavesZeroAlone) {
  std::vector<float> v = {3.f, 4.f};
  l2_normalize(v);
  EXPECT_FLOAT_EQ(v[0], 0.6f);
  EXPECT_FLOAT_EQ(v[1], 0.8f);
  std::vector<float> zero = {0.f, 0.f, 0.f};
  l2_normalize(zero);
  EXPECT_EQ(zero, std::vector<float>({0.f, 0.f, 0.f}));
  std::vector<float> empty;
  l2_normalize(empty);
  std::vector<float> tiny(1000, 1e-20f);
  l2_normalize(tiny);
  EXPECT_NEAR(norm(tiny), 1.0, 1e-5);
}

}  // namespace
}  // namespace deeplens
