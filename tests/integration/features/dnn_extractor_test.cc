// The OpenCV DNN extractor against real models: the two MobileNets in ../shared/models (TensorFlow
// .pb) and ONNX models this test generates with Debian's python3-onnx (make_onnx_models.py),
// all configured through parse_model_spec exactly as a [[models]] table would be.
#include "features/dnn/dnn_extractor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include "feature_test_support.h"
#include "features/model_spec.h"

namespace deeplens {
namespace {

using namespace deeplens::testing;

ModelSpec spec_from(const ConfigSection& section) {
  auto spec = parse_model_spec(section);
  EXPECT_TRUE(spec.ok()) << spec.error().to_string();
  return spec.ok() ? *spec : ModelSpec{};
}

ConfigSection mobilenet_section(const std::string& file, const std::string& output, int dimension) {
  return {{"name", "mobilenet"},
          {"file", (models_dir() / file).string()},
          {"output_layer", output},
          {"dimension", std::to_string(dimension)},
          {"mean", "127.5"},
          {"scale", "0.00784313725490196"}};
}

std::unique_ptr<Extractor> load(const ConfigSection& section) {
  auto extractor = make_dnn_extractor(spec_from(section));
  EXPECT_TRUE(extractor.ok()) << extractor.error().to_string();
  return extractor.ok() ? std::move(*extractor) : nullptr;
}

std::vector<std::vector<float>> extract_all(Extractor& e, const std::vector<DecodedImage>& images) {
  std::vector<ExtractorInput> inputs;
  for (const auto& img : images) inputs.push_back({&img, {}, "img"});
  auto out = e.extract(inputs);
  EXPECT_TRUE(out.ok()) << out.error().to_string();
  return out.ok() ? std::move(*out) : std::vector<std::vector<float>>{};
}

std::vector<float> extract_one(Extractor& e, const DecodedImage& image) {
  auto out = extract_all(e, {image});
  return out.empty() ? std::vector<float>{} : out[0];
}

// Photos used across tests, decoded once to 224x224.
const std::vector<DecodedImage>& photos() {
  static const std::vector<DecodedImage> images = [] {
    std::vector<DecodedImage> out;
    for (const fs::path& p : {skimage_data() / "chelsea.png", skimage_data() / "coffee.png",
                              skimage_data() / "astronaut.png", skimage_data() / "rocket.jpg",
                              opencv_data() / "baboon.jpg", opencv_data() / "fruits.jpg",
                              opencv_data() / "messi5.jpg", opencv_data() / "butterfly.jpg"})
      out.push_back(decode_photo(p, 224, 224));
    return out;
  }();
  return images;
}

TEST(DnnExtractorTest, MobilenetV2GivesUnitLength1280DimensionalEmbeddings) {
  auto e = load(mobilenet_section("mobilenet_v2_1.0_224_quint8.pb", "embedding", 1280));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->info().name, "mobilenet");
  EXPECT_EQ(e->info().dimension, 1280);
  EXPECT_EQ(e->info().input_width, 224);
  EXPECT_EQ(e->info().input_height, 224);
  const auto v = extract_one(*e, photos()[0]);
  ASSERT_EQ(v.size(), 1280u);
  EXPECT_NEAR(norm(v), 1.0, 1e-5);
  EXPECT_EQ(extract_one(*e, photos()[0]), v) << "same image, same vector";
  const auto other = extract_one(*e, photos()[3]);
  EXPECT_LT(cosine(v, other), 0.9) << "a cat and a rocket are not near-duplicates";
}

TEST(DnnExtractorTest, MobilenetV1GivesUnitLength1024DimensionalEmbeddings) {
  auto e = load(mobilenet_section("mobilenet_v1_1.0_224_embed_quint8.pb", "embedding", 1024));
  ASSERT_TRUE(e);
  const auto out = extract_all(*e, {photos()[0], photos()[1]});
  ASSERT_EQ(out.size(), 2u);
  for (const auto& v : out) {
    ASSERT_EQ(v.size(), 1024u);
    EXPECT_NEAR(norm(v), 1.0, 1e-5);
  }
  EXPECT_EQ(extract_one(*e, photos()[1]), out[1]);
}

// Sanity of the whole chain (decode, RGB order, mean/scale, forward): the classifier head of the
// same network recognises the photos.
TEST(DnnExtractorTest, MobilenetV2ProbOutputRecognisesCatAndEspresso) {
  auto section = mobilenet_section("mobilenet_v2_1.0_224_quint8.pb", "prob", 1001);
  section["normalize"] = "false";
  auto e = load(section);
  ASSERT_TRUE(e);
  const auto labels = read_lines(models_dir() / "imagenet_labels_1001.txt");
  ASSERT_EQ(labels.size(), 1001u);
  const auto out = extract_all(*e, {photos()[0], photos()[1]});
  ASSERT_EQ(out.size(), 2u);
  std::vector<std::string> top;
  for (const auto& probs : out) {
    const auto best = std::max_element(probs.begin(), probs.end()) - probs.begin();
    top.push_back(labels[static_cast<size_t>(best)]);
    std::printf("top-1: %-30s p=%.3f\n", labels[static_cast<size_t>(best)].c_str(), probs[static_cast<size_t>(best)]);
  }
  const std::vector<std::string> cats = {"tabby, tabby cat", "tiger cat", "Egyptian cat", "Persian cat",
                                         "Siamese cat, Siamese"};
  EXPECT_NE(std::find(cats.begin(), cats.end(), top[0]), cats.end()) << "chelsea.png: " << top[0];
  EXPECT_EQ(top[1], "espresso") << "coffee.png";
  EXPECT_GT(out[1][968], 0.5) << "espresso probability";
}

// Batching must not change results; prints the timings the README quotes.
TEST(DnnExtractorTest, BatchOfEightMatchesSingleImagesAndReportsTimings) {
  std::unique_ptr<Extractor> e;
  const double load_ms = time_ms([&] { e = load(mobilenet_section("mobilenet_v2_1.0_224_quint8.pb", "embedding", 1280)); });
  ASSERT_TRUE(e);
  const auto& images = photos();
  ASSERT_EQ(images.size(), 8u);

  std::vector<std::vector<float>> singles;
  const double single_ms = time_ms([&] {
    for (const auto& img : images) singles.push_back(extract_one(*e, img));
  });
  std::vector<std::vector<float>> batched;
  const double batch_ms = time_ms([&] { batched = extract_all(*e, images); });
  ASSERT_EQ(batched.size(), 8u);
  for (size_t i = 0; i < 8; ++i) EXPECT_LT(max_abs_diff(batched[i], singles[i]), 1e-4) << "image " << i;

  // Steady state: three more rounds of each.
  double single_steady = 0;
  double batch_steady = 0;
  for (int round = 0; round < 3; ++round) {
    single_steady += time_ms([&] {
      for (const auto& img : images) (void)extract_one(*e, img);
    });
    batch_steady += time_ms([&] { (void)extract_all(*e, images); });
  }
  std::printf("mobilenet_v2: load+check %.1f ms; per image: batch 1 %.1f ms (first round %.1f), batch 8 %.1f ms (first %.1f)\n",
              load_ms, single_steady / 3 / 8, single_ms / 8, batch_steady / 3 / 8, batch_ms / 8);
}

TEST(DnnExtractorTest, BatchesLargerThanBatchSizeAreSplit) {
  auto section = mobilenet_section("mobilenet_v2_1.0_224_quint8.pb", "embedding", 1280);
  section["batch_size"] = "3";
  auto e = load(section);
  ASSERT_TRUE(e);
  std::vector<DecodedImage> seven(photos().begin(), photos().begin() + 7);
  const auto out = extract_all(*e, seven);
  ASSERT_EQ(out.size(), 7u);
  for (size_t i = 0; i < 7; ++i) EXPECT_LT(max_abs_diff(out[i], extract_one(*e, seven[i])), 1e-4) << i;
  EXPECT_TRUE(extract_all(*e, {}).empty());
}

TEST(DnnExtractorTest, RejectsInputsThatAreNotTheModelsPixels) {
  auto e = load(mobilenet_section("mobilenet_v2_1.0_224_quint8.pb", "embedding", 1280));
  ASSERT_TRUE(e);
  const DecodedImage small = decode_photo(skimage_data() / "chelsea.png", 100, 100);
  const ExtractorInput wrong_size[] = {{&photos()[0], {}, "ok"}, {&small, {}, "img_small"}};
  auto r = e->extract(wrong_size);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(r.error().context.at("input"), "1");
  EXPECT_EQ(r.error().context.at("image_id"), "img_small");
  EXPECT_NE(r.error().message.find("100x100"), std::string::npos) << r.error().message;

  const ExtractorInput no_pixels[] = {{nullptr, "bytes", "img_x"}};
  r = e->extract(no_pixels);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);

  DecodedImage short_buffer = photos()[0];
  short_buffer.rgb.resize(100);
  const ExtractorInput truncated[] = {{&short_buffer, {}, "img_t"}};
  r = e->extract(truncated);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
}

TEST(DnnExtractorTest, LoadErrorsSayWhatIsWrong) {
  // Missing file.
  auto section = mobilenet_section("no_such_model.pb", "embedding", 1280);
  auto r = make_dnn_extractor(spec_from(section));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  EXPECT_NE(r.error().message.find("no_such_model.pb"), std::string::npos) << r.error().message;

  // A file that is not a model.
  TempDir dir;
  for (const char* name : {"garbage.pb", "garbage.onnx", "model.unknown"}) {
    std::ofstream(dir.path() / name) << "this is not a model";
    section["file"] = (dir.path() / name).string();
    r = make_dnn_extractor(spec_from(section));
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << name;
    EXPECT_NE(r.error().message.find("cannot load"), std::string::npos) << r.error().message;
  }

  // An output layer the model does not have.
  r = make_dnn_extractor(spec_from(mobilenet_section("mobilenet_v2_1.0_224_quint8.pb", "features", 1280)));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message.find("embedding, prob"), std::string::npos) << "lists the outputs: " << r.error().message;

  // Several outputs and no output_layer.
  section = mobilenet_section("mobilenet_v2_1.0_224_quint8.pb", "", 1280);
  section.erase("output_layer");
  r = make_dnn_extractor(spec_from(section));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("set `output_layer`"), std::string::npos) << r.error().message;

  // A dimension that does not match the model.
  r = make_dnn_extractor(spec_from(mobilenet_section("mobilenet_v2_1.0_224_quint8.pb", "embedding", 2048)));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message.find("1x1280"), std::string::npos) << r.error().message;
}

// ---- ONNX models generated by make_onnx_models.py ----

class OnnxExtractorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const int rc = run_python({std::string(DEEPLENS_SOURCE_DIR) + "/tests/integration/features/make_onnx_models.py",
                               dir_->path().string()});
    ASSERT_EQ(rc, 0) << "make_onnx_models.py failed (needs Debian's python3-onnx)";
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string model(const char* name) { return (dir_->path() / name).string(); }

  // A torchvision-style ResNet-50 configuration, changed only in file and name.
  static ConfigSection resnet_section(const std::string& file) {
    return {{"name", "resnet50"},
            {"kind", "dnn"},
            {"version", "v2.7"},
            {"file", file},
            {"output_layer", "embedding"},
            {"dimension", "2048"},
            {"mean", "123.675,116.28,103.53"},
            {"std", "58.395,57.12,57.375"},
            {"scale", "1"},
            {"channel_order", "rgb"}};
  }

  static TempDir* dir_;
};
TempDir* OnnxExtractorTest::dir_ = nullptr;

TEST_F(OnnxExtractorTest, ResnetStyleOnnxModelPlugsInByConfigurationAlone) {
  auto e = load(resnet_section(model("resnet_like.onnx")));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->info().name, "resnet50");
  EXPECT_EQ(e->info().version, "v2.7");
  EXPECT_EQ(e->info().dimension, 2048);
  const auto out = extract_all(*e, {photos()[0], photos()[1], photos()[2]});
  ASSERT_EQ(out.size(), 3u);
  for (const auto& v : out) {
    ASSERT_EQ(v.size(), 2048u);
    EXPECT_NEAR(norm(v), 1.0, 1e-5);
  }
  // Deterministic, and batching does not change results.
  EXPECT_EQ(extract_all(*e, {photos()[0], photos()[1], photos()[2]}), out);
  for (size_t i = 0; i < 3; ++i) EXPECT_LT(max_abs_diff(extract_one(*e, photos()[i]), out[i]), 1e-5);
  EXPECT_LT(cosine(out[0], out[1]), 0.9999) << "different photos give different vectors";

  // A second, independent load gives the same vectors.
  auto again = load(resnet_section(model("resnet_like.onnx")));
  ASSERT_TRUE(again);
  EXPECT_EQ(extract_one(*again, photos()[0]), out[0]);
}

TEST_F(OnnxExtractorTest, ModelThatCannotBatchRunsOneImagePerForward) {
  auto batching = load(resnet_section(model("resnet_like.onnx")));
  auto fixed = load(resnet_section(model("resnet_fixed_batch.onnx")));
  ASSERT_TRUE(batching && fixed);
  std::vector<DecodedImage> five(photos().begin(), photos().begin() + 5);
  const auto expected = extract_all(*batching, five);
  const auto got = extract_all(*fixed, five);
  ASSERT_EQ(got.size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_LT(max_abs_diff(got[i], expected[i]), 1e-5) << i;
}

// What reaches the model is ((pixel - mean) * scale) / std per channel, in the model's channel
// order: the probe model outputs the per-channel averages of its input.
TEST_F(OnnxExtractorTest, PreprocessingFollowsMeanScaleStdAndChannelOrder) {
  DecodedImage px;
  px.width = 2;
  px.height = 2;
  for (int i = 0; i < 4; ++i) px.rgb.insert(px.rgb.end(), {10, 20, 30});

  ConfigSection section = {{"name", "probe"},      {"file", model("channel_probe.onnx")},
                           {"dimension", "3"},     {"input_width", "2"},
                           {"input_height", "2"},  {"normalize", "false"},
                           {"mean", "1,2,3"},      {"scale", "0.5"},
                           {"std", "1,2,4"},       {"channel_order", "rgb"},
                           {"batch_size", "1"}};
  auto rgb = load(section);
  ASSERT_TRUE(rgb);
  auto v = extract_one(*rgb, px);
  ASSERT_EQ(v.size(), 3u);
  EXPECT_FLOAT_EQ(v[0], (10 - 1) * 0.5f / 1);
  EXPECT_FLOAT_EQ(v[1], (20 - 2) * 0.5f / 2);
  EXPECT_FLOAT_EQ(v[2], (30 - 3) * 0.5f / 4);

  section["channel_order"] = "bgr";
  auto bgr = load(section);
  ASSERT_TRUE(bgr);
  v = extract_one(*bgr, px);
  ASSERT_EQ(v.size(), 3u);
  EXPECT_FLOAT_EQ(v[0], (30 - 1) * 0.5f / 1) << "B first, with the first mean and std";
  EXPECT_FLOAT_EQ(v[1], (20 - 2) * 0.5f / 2);
  EXPECT_FLOAT_EQ(v[2], (10 - 3) * 0.5f / 4);
}

TEST_F(OnnxExtractorTest, ConcurrentCallersGetTheSameVectorsAsOneCaller) {
  auto e = load(resnet_section(model("resnet_like.onnx")));
  ASSERT_TRUE(e);
  const auto& images = photos();
  std::vector<std::vector<float>> expected;
  for (const auto& img : images) expected.push_back(extract_one(*e, img));

  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (size_t i = 0; i < images.size(); ++i) {
          const size_t k = (i + static_cast<size_t>(t)) % images.size();
          const ExtractorInput in[] = {{&images[k], {}, "img"}};
          auto r = e->extract(in);
          if (!r.ok() || max_abs_diff((*r)[0], expected[k]) > 1e-5) ++mismatches[static_cast<size_t>(t)];
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

}  // namespace
}  // namespace deeplens
