// near_duplicate: calibrates the near-duplicate threshold of a model on real photographs (issue
// #21, part 2). The rule being calibrated is the one the index stage applies: a new image is a
// near-duplicate when its nearest neighbour in the tenant's collection scores >= threshold, and it
// is reported as a duplicate of that neighbour.
//
//   near_duplicate                                   the built-in descriptor
//   near_duplicate --model-file ../shared/models/mobilenet_v2_1.0_224_quint8.pb
//
// Photos: python3-skimage's and opencv-doc's samples, including look-alike pairs (two views of one
// scene: basketball1/2, leuvenA/B, aloeL/R, motorcycle_left/right). Variants of each photo, made
// with libvips: resized to 50%, re-encoded as JPEG quality 70, cropped 10% (centre 90%), brightness
// +20% and -20%. Every image is decoded exactly as the pipeline does (decode_for_model).
//
// Queries, against a collection holding every original:
//   positive  each variant of P, with P's original in the collection: a true positive when its
//             nearest neighbour is P's original with score >= t (a nearest neighbour that is
//             another photo with score >= t is a false positive: a wrong duplicateOf)
//   negative  each original P against the collection without P, and each variant of P against the
//             collection without P: a false positive when the nearest neighbour scores >= t
// Prints precision and recall per threshold and the smallest threshold with precision >= 0.99.
#include <vips/vips8>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "features/builtin/builtin_descriptor.h"
#include "features/dnn/dnn_extractor.h"
#include "imaging/image.h"

namespace deeplens::bench {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> photos() {
  const fs::path skimage = "/usr/lib/python3/dist-packages/skimage/data";
  const fs::path opencv = "/usr/share/doc/opencv-doc/examples/data";
  std::vector<fs::path> out;
  for (const char* name : {"astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                           "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "camera.png", "coins.png",
                           "horse.png", "brick.png", "grass.png", "gravel.png", "page.png", "moon.png"})
    out.push_back(skimage / name);
  for (const char* name : {"baboon.jpg", "fruits.jpg", "lena.jpg", "messi5.jpg", "butterfly.jpg", "home.jpg",
                           "building.jpg", "orange.jpg", "apple.jpg", "starry_night.jpg", "squirrel_cls.jpg",
                           "HappyFish.jpg", "aero1.jpg", "aero3.jpg", "leuvenA.jpg", "leuvenB.jpg", "basketball1.png",
                           "basketball2.png", "aloeL.jpg", "aloeR.jpg", "smarties.png", "graf1.png", "graf3.png",
                           "box.png", "box_in_scene.png", "pic1.png", "pic3.png", "LinuxLogo.jpg", "WindowsLogo.jpg",
                           "board.jpg", "notes.png", "sudoku.png", "templ.png", "cards.png", "ml.png", "gradient.png"})
    out.push_back(opencv / name);
  out.erase(std::remove_if(out.begin(), out.end(), [](const fs::path& p) { return !fs::exists(p); }), out.end());
  return out;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string encode(const vips::VImage& image, const char* suffix, int quality = 0) {
  void* buf = nullptr;
  size_t len = 0;
  vips::VOption* options = vips::VImage::option();
  if (quality > 0) options->set("Q", quality);
  image.write_to_buffer(suffix, &buf, &len, options);
  std::string out(static_cast<const char*>(buf), len);
  g_free(buf);
  return out;
}

// The five edits of one photo, encoded as files a user would upload.
std::vector<std::pair<const char*, std::string>> variants_of(const std::string& bytes) {
  vips::VImage image = vips::VImage::new_from_buffer(bytes.data(), bytes.size(), "");
  if (image.bands() == 4 || image.bands() == 2)
    image = image.flatten(vips::VImage::option()->set("background", std::vector<double>{255.0}));
  image = image.cast(VIPS_FORMAT_UCHAR);
  const int w = image.width(), h = image.height();
  const int cw = w * 9 / 10, ch = h * 9 / 10;
  auto scaled = [&](double k) { return image.linear(std::vector<double>{k}, std::vector<double>{0.0}).cast(VIPS_FORMAT_UCHAR); };
  return {
      {"resize50", encode(image.resize(0.5), ".png")},
      {"jpeg_q70", encode(image, ".jpg", 70)},
      {"crop90", encode(image.crop((w - cw) / 2, (h - ch) / 2, cw, ch), ".png")},
      {"bright+20", encode(scaled(1.2), ".png")},
      {"bright-20", encode(scaled(0.8), ".png")},
  };
}

float dot(const std::vector<float>& a, const std::vector<float>& b) {
  float s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

struct Query {
  std::string what;      // "photo/variant"
  size_t source;         // the photo it was made from
  bool own_in_collection;
  size_t nearest;        // nearest original (excluding the source when !own_in_collection)
  float score;
};

int run(int argc, char** argv) {
  std::string model_file;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "--model-file" && i + 1 < argc) model_file = argv[++i];
    else {
      std::printf("near_duplicate [--model-file mobilenet_v2.pb]\n");
      return f == "--help" ? 0 : 2;
    }
  }
  if (auto st = init_imaging(); !st) throw std::runtime_error(st.error().to_string());
  std::unique_ptr<Extractor> model;
  if (model_file.empty()) {
    model = make_builtin_descriptor();
  } else {
    ModelSpec spec;
    spec.name = "mobilenet_v2";
    spec.file = model_file;
    spec.output_layer = "embedding";
    spec.dimension = 1280;
    spec.mean = {127.5, 127.5, 127.5};
    spec.scale = 1 / 127.5;
    auto made = make_dnn_extractor(spec);
    if (!made) throw std::runtime_error(made.error().to_string());
    model = std::move(made).value();
  }
  const ModelInfo& info = model->info();
  auto vector_of = [&](const std::string& bytes) {
    const auto span = std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    auto px = decode_for_model(span, info.input_width, info.input_height, ImageLimits{});
    if (!px) throw std::runtime_error(px.error().to_string());
    const ExtractorInput in{&*px, bytes, "calibration"};
    auto v = model->extract(std::span(&in, 1));
    if (!v) throw std::runtime_error(v.error().to_string());
    return std::move((*v)[0]);
  };

  const auto paths = photos();
  std::vector<std::string> names;
  std::vector<std::vector<float>> originals;
  std::vector<std::vector<std::pair<std::string, std::vector<float>>>> edited;
  for (const auto& p : paths) {
    const std::string bytes = read_file(p);
    names.push_back(p.filename().string());
    originals.push_back(vector_of(bytes));
    edited.emplace_back();
    for (auto& [name, file] : variants_of(bytes)) edited.back().emplace_back(name, vector_of(file));
  }
  auto nearest = [&](const std::vector<float>& v, size_t skip) {
    std::pair<size_t, float> best{0, -2.0f};
    for (size_t j = 0; j < originals.size(); ++j) {
      if (j == skip) continue;
      if (const float s = dot(v, originals[j]); s > best.second) best = {j, s};
    }
    return best;
  };
  std::vector<Query> queries;
  const size_t none = originals.size();
  for (size_t i = 0; i < originals.size(); ++i) {
    auto [n, s] = nearest(originals[i], i);
    queries.push_back({names[i] + "/original", i, false, n, s});
    for (const auto& [variant, v] : edited[i]) {
      auto [own_n, own_s] = nearest(v, none);
      queries.push_back({names[i] + "/" + variant, i, true, own_n, own_s});
      auto [other_n, other_s] = nearest(v, i);
      queries.push_back({names[i] + "/" + variant, i, false, other_n, other_s});
    }
  }
  size_t positives = 0;
  for (const auto& q : queries) positives += q.own_in_collection;

  std::printf("model %s %s (%d-d): %zu photos, %zu positive queries (variants with their original indexed), %zu negative\n",
              info.name.c_str(), info.version.c_str(), info.dimension, paths.size(), positives,
              queries.size() - positives);
  std::printf("%9s %9s %7s %5s %5s %5s\n", "threshold", "precision", "recall", "TP", "FP", "FN");
  double chosen = -1, chosen_recall = 0, chosen_precision = 0;
  // 0.50 to 0.95 by 0.01, then to 0.999 by 0.001 (a global descriptor's look-alikes sit close to 1).
  std::vector<int> steps;  // in thousandths
  for (int m = 500; m < 950; m += 10) steps.push_back(m);
  for (int m = 950; m <= 999; ++m) steps.push_back(m);
  for (const int step : steps) {
    const float t = step / 1000.0f;
    size_t tp = 0, fp = 0;
    for (const auto& q : queries) {
      if (q.score < t) continue;
      if (q.own_in_collection && q.nearest == q.source) ++tp;
      else ++fp;
    }
    const double precision = tp + fp ? static_cast<double>(tp) / (tp + fp) : 1.0;
    const double recall = static_cast<double>(tp) / positives;
    if (step % 50 == 0 || (step > 950 && step % 10 == 0) || (chosen < 0 && precision >= 0.99))
      std::printf("%9.3f %9.4f %7.4f %5zu %5zu %5zu\n", t, precision, recall, tp, fp, positives - tp);
    if (chosen < 0 && precision >= 0.99) chosen = t, chosen_recall = recall, chosen_precision = precision;
  }
  // The hardest cases either side: the closest non-duplicates and the weakest duplicates.
  std::vector<const Query*> negatives, weak;
  for (const auto& q : queries) (q.own_in_collection ? weak : negatives).push_back(&q);
  std::sort(negatives.begin(), negatives.end(), [](auto* a, auto* b) { return a->score > b->score; });
  std::sort(weak.begin(), weak.end(), [](auto* a, auto* b) { return a->score < b->score; });
  std::printf("closest non-duplicates:\n");
  for (size_t i = 0; i < std::min<size_t>(6, negatives.size()); ++i)
    std::printf("  %.3f  %-28s -> %s\n", negatives[i]->score, negatives[i]->what.c_str(), names[negatives[i]->nearest].c_str());
  std::printf("weakest duplicates:\n");
  for (size_t i = 0; i < std::min<size_t>(6, weak.size()); ++i)
    std::printf("  %.3f  %-28s -> %s\n", weak[i]->score, weak[i]->what.c_str(), names[weak[i]->nearest].c_str());
  if (chosen < 0) std::printf("no threshold in 0.500..0.999 reaches precision 0.99\n");
  else std::printf("smallest threshold with precision >= 0.99: %.3f (precision %.4f, recall %.4f)\n", chosen,
                   chosen_precision, chosen_recall);
  return 0;
}

}  // namespace
}  // namespace deeplens::bench

int main(int argc, char** argv) {
  try {
    return deeplens::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "near_duplicate: %s\n", e.what());
    return 1;
  }
}
