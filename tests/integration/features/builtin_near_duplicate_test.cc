// The builtin descriptor finds the original of a near-duplicate among unrelated real photos:
// for every photo, three variants made with libvips (50% resize, JPEG q70 re-encode, 90% centre
// crop) must score their own original highest, by a clear margin.
#include <vips/vips8>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "features/builtin/builtin_descriptor.h"
#include "imaging/image.h"

namespace deeplens {
namespace {

const char* const kSkimage = "/usr/lib/python3/dist-packages/skimage/data/";
const char* const kOpencv = "/usr/share/doc/opencv-doc/examples/data/";

// Real photographs only (no drawings, charts or synthetic patterns); one of each stereo or
// sequence pair (leuvenA/leuvenB, aero1/aero3 ...) since those are near-duplicates themselves.
const std::vector<std::string> kPhotos = {
    std::string(kSkimage) + "astronaut.png",     std::string(kSkimage) + "chelsea.png",
    std::string(kSkimage) + "coffee.png",        std::string(kSkimage) + "rocket.jpg",
    std::string(kSkimage) + "motorcycle_left.png", std::string(kSkimage) + "hubble_deep_field.jpg",
    std::string(kSkimage) + "retina.jpg",        std::string(kSkimage) + "camera.png",
    std::string(kSkimage) + "coins.png",         std::string(kSkimage) + "grass.png",
    std::string(kSkimage) + "brick.png",         std::string(kSkimage) + "gravel.png",
    std::string(kOpencv) + "baboon.jpg",         std::string(kOpencv) + "fruits.jpg",
    std::string(kOpencv) + "messi5.jpg",         std::string(kOpencv) + "butterfly.jpg",
    std::string(kOpencv) + "home.jpg",           std::string(kOpencv) + "leuvenA.jpg",
    std::string(kOpencv) + "building.jpg",       std::string(kOpencv) + "orange.jpg",
    std::string(kOpencv) + "apple.jpg",          std::string(kOpencv) + "starry_night.jpg",
    std::string(kOpencv) + "squirrel_cls.jpg",   std::string(kOpencv) + "HappyFish.jpg",
    std::string(kOpencv) + "aero1.jpg",          std::string(kOpencv) + "stuff.jpg",
    std::string(kOpencv) + "board.jpg",          std::string(kOpencv) + "smarties.png",
    std::string(kOpencv) + "chicky_512.png",     std::string(kOpencv) + "basketball1.png",
    std::string(kOpencv) + "rubberwhale1.png",   std::string(kOpencv) + "ela_original.jpg",
    std::string(kOpencv) + "graf1.png",          std::string(kOpencv) + "box_in_scene.png",
};

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<uint8_t> encode(const vips::VImage& image, const char* suffix, int quality = 0) {
  void* buf = nullptr;
  size_t len = 0;
  vips::VOption* options = vips::VImage::option();
  if (quality > 0) options->set("Q", quality);
  image.write_to_buffer(suffix, &buf, &len, options);
  std::vector<uint8_t> out(static_cast<uint8_t*>(buf), static_cast<uint8_t*>(buf) + len);
  g_free(buf);
  return out;
}

struct Variant {
  const char* name;
  std::vector<uint8_t> bytes;
};

std::vector<Variant> make_variants(const std::vector<uint8_t>& original) {
  vips::VImage image = vips::VImage::new_from_buffer(original.data(), original.size(), "");
  const int w = image.width();
  const int h = image.height();
  const int cw = static_cast<int>(w * 0.9);
  const int ch = static_cast<int>(h * 0.9);
  return {
      {"resize50", encode(image.resize(0.5), ".png")},
      {"jpeg_q70", encode(image, ".jpg", 70)},
      {"crop90", encode(image.crop((w - cw) / 2, (h - ch) / 2, cw, ch), ".png")},
  };
}

float cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double dot = 0;
  for (size_t i = 0; i < a.size(); ++i) dot += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(dot);  // both L2-normalised
}

TEST(BuiltinNearDuplicates, EveryVariantRanksItsOriginalFirstByAClearMargin) {
  ASSERT_TRUE(init_imaging().ok());
  std::vector<std::string> photos;
  for (const auto& p : kPhotos) {
    if (std::filesystem::exists(p)) photos.push_back(p);
  }
  if (photos.size() < 10) GTEST_SKIP() << "needs python3-skimage and opencv-doc sample photos";

  auto extractor = make_builtin_descriptor();
  const ModelInfo& info = extractor->info();
  const ImageLimits limits;
  using Clock = std::chrono::steady_clock;
  double decode_ms = 0;
  double extract_ms = 0;
  int timed = 0;

  auto describe = [&](const std::vector<uint8_t>& bytes, const std::string& what) {
    const auto t0 = Clock::now();
    auto pixels = decode_for_model(bytes, info.input_width, info.input_height, limits);
    const auto t1 = Clock::now();
    EXPECT_TRUE(pixels.ok()) << what << ": " << pixels.error().to_string();
    if (!pixels.ok()) return std::vector<float>(static_cast<size_t>(info.dimension));
    ExtractorInput input{&*pixels, {}, what};
    auto vectors = extractor->extract(std::span(&input, 1));
    const auto t2 = Clock::now();
    EXPECT_TRUE(vectors.ok()) << what;
    decode_ms += std::chrono::duration<double, std::milli>(t1 - t0).count();
    extract_ms += std::chrono::duration<double, std::milli>(t2 - t1).count();
    ++timed;
    return vectors.ok() ? (*vectors)[0] : std::vector<float>(static_cast<size_t>(info.dimension));
  };

  std::vector<std::vector<float>> originals;
  std::vector<std::vector<Variant>> variants;
  for (const auto& p : photos) {
    auto bytes = read_file(p);
    originals.push_back(describe(bytes, p));
    variants.push_back(make_variants(bytes));
  }
  const double original_decode_ms = decode_ms / timed;
  const double original_extract_ms = extract_ms / timed;

  std::cout << std::left << std::setw(24) << "photo" << std::setw(10) << "variant" << std::right
            << std::setw(9) << "own" << std::setw(9) << "best_oth" << std::setw(9) << "margin"
            << "  closest other\n";
  float min_margin = 1.f;
  double sum_margin = 0;
  int count = 0;
  int misses = 0;
  for (size_t i = 0; i < photos.size(); ++i) {
    for (const Variant& v : variants[i]) {
      const std::string what = std::filesystem::path(photos[i]).filename().string() + "/" + v.name;
      const std::vector<float> vec = describe(v.bytes, what);
      const float own = cosine(vec, originals[i]);
      float best_other = -1.f;
      size_t best_index = 0;
      for (size_t j = 0; j < photos.size(); ++j) {
        if (j == i) continue;
        const float s = cosine(vec, originals[j]);
        if (s > best_other) {
          best_other = s;
          best_index = j;
        }
      }
      const float margin = own - best_other;
      min_margin = std::min(min_margin, margin);
      sum_margin += margin;
      ++count;
      if (margin <= 0) ++misses;
      std::cout << std::left << std::setw(24) << std::filesystem::path(photos[i]).filename().string()
                << std::setw(10) << v.name << std::right << std::fixed << std::setprecision(3)
                << std::setw(9) << own << std::setw(9) << best_other << std::setw(9) << margin
                << "  " << std::filesystem::path(photos[best_index]).filename().string() << "\n";
      EXPECT_GT(margin, 0.f) << what << " ranks " << photos[best_index] << " above its original";
    }
  }
  std::cout << "photos=" << photos.size() << " variants=" << count << " misses=" << misses
            << " min_margin=" << min_margin << " mean_margin=" << sum_margin / count << "\n"
            << "per image (originals, " << photos.size() << "): decode_for_model "
            << original_decode_ms << " ms, builtin extract " << original_extract_ms << " ms\n";
  RecordProperty("min_margin", std::to_string(min_margin));
  RecordProperty("mean_margin", std::to_string(sum_margin / count));
  RecordProperty("decode_ms", std::to_string(original_decode_ms));
  RecordProperty("extract_ms", std::to_string(original_extract_ms));
  EXPECT_GT(min_margin, 0.15f) << "near-duplicates must win clearly, not by a hair";
}

}  // namespace
}  // namespace deeplens
