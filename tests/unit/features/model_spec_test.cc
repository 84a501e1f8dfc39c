#include "features/model_spec.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <fstream>

#include "common/config.h"

namespace deeplens {
namespace {

Error parse_error(const ConfigSection& section, size_t index = 0) {
  auto spec = parse_model_spec(section, index);
  EXPECT_FALSE(spec.ok());
  return spec.ok() ? Error() : spec.error();
}

TEST(ModelSpecTest, DnnModelTakesDocumentedDefaults) {
  auto spec = parse_model_spec({{"name", "resnet50"}, {"file", "r50.onnx"}, {"dimension", "2048"}});
  ASSERT_TRUE(spec.ok()) << spec.error().to_string();
  EXPECT_EQ(spec->name, "resnet50");
  EXPECT_EQ(spec->kind, ModelKind::kDnn);
  EXPECT_EQ(spec->version, "1.0");
  EXPECT_FALSE(spec->is_default);
  EXPECT_EQ(spec->batch_size, 8);
  EXPECT_TRUE(spec->normalize);
  EXPECT_EQ(spec->dimension, 2048);
  EXPECT_EQ(spec->file, "r50.onnx");
  EXPECT_EQ(spec->config_file, "");
  EXPECT_EQ(spec->input_width, 224);
  EXPECT_EQ(spec->input_height, 224);
  EXPECT_EQ(spec->mean, (std::array<double, 3>{0, 0, 0}));
  EXPECT_EQ(spec->scale, 1.0);
  EXPECT_EQ(spec->std, (std::array<double, 3>{1, 1, 1}));
  EXPECT_EQ(spec->channel_order, ChannelOrder::kRgb);
  EXPECT_FALSE(spec->swap_rb());
  EXPECT_EQ(spec->output_layer, "");
  EXPECT_EQ(spec->threads, 0);
}

TEST(ModelSpecTest, DnnModelReadsEveryKey) {
  auto spec = parse_model_spec({{"name", "mobilenet_v2"},
                                {"kind", "dnn"},
                                {"version", "2.0-q8"},
                                {"default", "true"},
                                {"batch_size", "16"},
                                {"normalize", "false"},
                                {"dimension", "1280"},
                                {"file", "/m/mnv2.pb"},
                                {"config_file", "/m/mnv2.pbtxt"},
                                {"input_width", "192"},
                                {"input_height", "160"},
                                {"mean", "123.675, 116.28,103.53"},
                                {"scale", "0.00784313725490196"},
                                {"std", "2"},
                                {"channel_order", "bgr"},
                                {"output_layer", "embedding"},
                                {"threads", "2"}});
  ASSERT_TRUE(spec.ok()) << spec.error().to_string();
  EXPECT_EQ(spec->version, "2.0-q8");
  EXPECT_TRUE(spec->is_default);
  EXPECT_EQ(spec->batch_size, 16);
  EXPECT_FALSE(spec->normalize);
  EXPECT_EQ(spec->config_file, "/m/mnv2.pbtxt");
  EXPECT_EQ(spec->input_width, 192);
  EXPECT_EQ(spec->input_height, 160);
  EXPECT_EQ(spec->mean, (std::array<double, 3>{123.675, 116.28, 103.53}));
  EXPECT_DOUBLE_EQ(spec->scale, 1.0 / 127.5);
  EXPECT_EQ(spec->std, (std::array<double, 3>{2, 2, 2}));
  EXPECT_TRUE(spec->swap_rb());
  EXPECT_EQ(spec->output_layer, "embedding");
  EXPECT_EQ(spec->threads, 2);
}

TEST(ModelSpecTest, RemoteModelNeedsUrlAndDimension) {
  auto spec = parse_model_spec({{"name", "resnet50"},
                                {"kind", "remote"},
                                {"url", "http://127.0.0.1:8000/"},
                                {"dimension", "2048"},
                                {"timeout_ms", "1500"}});
  ASSERT_TRUE(spec.ok()) << spec.error().to_string();
  EXPECT_EQ(spec->kind, ModelKind::kRemote);
  EXPECT_EQ(spec->url, "http://127.0.0.1:8000") << "trailing slash dropped";
  EXPECT_EQ(spec->timeout_ms, 1500);

  auto defaults = parse_model_spec({{"name", "r"}, {"kind", "remote"}, {"url", "https://x"}, {"dimension", "3"}});
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->timeout_ms, 30000);

  EXPECT_EQ(parse_error({{"name", "r"}, {"kind", "remote"}, {"dimension", "3"}}).context.at("key"),
            "models[0].url");
  EXPECT_EQ(parse_error({{"name", "r"}, {"kind", "remote"}, {"url", "ftp://x"}, {"dimension", "3"}})
                .context.at("key"),
            "models[0].url");
  EXPECT_EQ(parse_error({{"name", "r"}, {"kind", "remote"}, {"url", "http://x"}}).context.at("key"),
            "models[0].dimension");
}

TEST(ModelSpecTest, BuiltinIsAlwaysNamedBuiltin) {
  auto spec = parse_model_spec({{"kind", "builtin"}, {"default", "true"}});
  ASSERT_TRUE(spec.ok()) << spec.error().to_string();
  EXPECT_EQ(spec->name, "builtin");
  EXPECT_EQ(spec->kind, ModelKind::kBuiltin);
  EXPECT_TRUE(spec->is_default);
  EXPECT_EQ(spec->dimension, 0) << "0 accepts the descriptor's own dimension";

  auto e = parse_error({{"kind", "builtin"}, {"name", "colors"}});
  EXPECT_EQ(e.context.at("key"), "models[0].name");
  e = parse_error({{"name", "builtin"}, {"file", "x.onnx"}, {"dimension", "3"}});
  EXPECT_EQ(e.context.at("key"), "models[0].name");
  EXPECT_NE(e.message.find("reserved"), std::string::npos) << e.message;
}

TEST(ModelSpecTest, ErrorsNameTheTableAndKey) {
  auto e = parse_error({{"name", "m"}, {"file", "m.onnx"}, {"dimension", "abc"}}, 1);
  EXPECT_EQ(e.code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(e.context.at("key"), "models[1].dimension");
  EXPECT_EQ(e.message, "models[1].dimension: expected an integer, got 'abc'");

  EXPECT_EQ(parse_error({{"name", "m"}, {"file", "m.onnx"}, {"dimension", "0"}}).context.at("key"),
            "models[0].dimension");
  EXPECT_EQ(parse_error({{"name", "m"}, {"file", "m.onnx"}, {"dimension", "8"}, {"batch_size", "0"}})
                .context.at("key"),
            "models[0].batch_size");
  EXPECT_EQ(parse_error({{"name", "m"}, {"file", "m.onnx"}, {"dimension", "8"}, {"normalize", "yes"}})
                .context.at("key"),
            "models[0].normalize");
  EXPECT_EQ(parse_error({{"name", "m"}, {"file", "m.onnx"}, {"dimension", "8"}, {"scale", "1/255"}})
                .context.at("key"),
            "models[0].scale");
  EXPECT_EQ(parse_error({{"name", "m"}, {"file", "m.onnx"}, {"dimension", "8"}, {"scale", "0"}})
                .context.at("key"),
            "models[0].scale");
  EXPECT_EQ(parse_error({{"name", "m"}, {"file", "m.onnx"}, {"dimension", "8"}, {"mean", "1,2"}})
                .context.at("key"),
            "models[0].mean");
  EXPECT_EQ(parse_error({{"name", "m"}, {"file", "m.onnx"}, {"dimension", "8"}, {"mean", "1,,3"}})
                .context.at("key"),
            "models[0].mean");
  EXPECT_EQ(parse_error({{"name", "m"}, {"file", "m.onnx"}, {"dimension", "8"}, {"std", "1,0,1"}})
                .context.at("key"),
            "models[0].std");
  EXPECT_EQ(parse_error({{"name", "m"}, {"file", "m.onnx"}, {"dimension", "8"}, {"channel_order", "grb"}})
                .context.at("key"),
            "models[0].channel_order");
  EXPECT_EQ(parse_error({{"name", "m"}, {"kind", "tflite"}}).context.at("key"), "models[0].kind");
  EXPECT_EQ(parse_error({{"file", "m.onnx"}, {"dimension", "8"}}).context.at("key"), "models[0].name");
  EXPECT_EQ(parse_error({{"name", "m"}, {"dimension", "8"}}).context.at("key"), "models[0].file");
  EXPECT_EQ(parse_error({{"name", "Res Net"}, {"file", "m"}, {"dimension", "8"}}).context.at("key"),
            "models[0].name");
}

TEST(ModelSpecTest, UnknownKeysAndKeysOfAnotherKindAreErrors) {
  auto e = parse_error({{"name", "m"}, {"file", "m.onnx"}, {"dimension", "8"}, {"dimensions", "8"}}, 2);
  EXPECT_EQ(e.context.at("key"), "models[2].dimensions");
  EXPECT_NE(e.message.find("unknown key"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("dimension"), std::string::npos) << "lists the keys it takes: " << e.message;

  e = parse_error({{"name", "m"}, {"file", "m.onnx"}, {"dimension", "8"}, {"url", "http://x"}});
  EXPECT_EQ(e.context.at("key"), "models[0].url");
  EXPECT_NE(e.message.find("only applies to kind = \"remote\""), std::string::npos) << e.message;

  e = parse_error({{"name", "r"}, {"kind", "remote"}, {"url", "http://x"}, {"dimension", "8"}, {"file", "m"}});
  EXPECT_EQ(e.context.at("key"), "models[0].file");

  e = parse_error({{"kind", "builtin"}, {"normalize", "false"}});
  EXPECT_EQ(e.context.at("key"), "models[0].normalize");
}

// The spec parser reads what Config::load makes of a real TOML file.
TEST(ModelSpecTest, ParsesModelsTablesLoadedFromToml) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("deeplens-models-" + std::to_string(::getpid()) + ".toml");
  std::ofstream(path) << R"(
[[models]]
name = "mobilenet_v2"
file = "/work/shared/models/mobilenet_v2_1.0_224_quint8.pb"
output_layer = "embedding"
dimension = 1280
mean = 127.5
scale = "0.00784313725490196"
normalize = true
batch_size = 4

[[models]]
name = "resnet50"
file = "resnet50.onnx"
dimension = 2048
mean = ["123.675", "116.28", "103.53"]
std = "58.395,57.12,57.375"
scale = 1.0

[[models]]
name = "remote_r50"
kind = "remote"
url = "http://127.0.0.1:8000"
dimension = 2048
timeout_ms = 5000
)";
  ConfigSources sources;
  sources.file = path;
  sources.section_names = {"models"};
  auto config = Config::load({}, sources);
  std::filesystem::remove(path);
  ASSERT_TRUE(config.ok()) << config.error().to_string();
  const auto& tables = config->sections("models");
  ASSERT_EQ(tables.size(), 3u);

  auto mnv2 = parse_model_spec(tables[0], 0);
  ASSERT_TRUE(mnv2.ok()) << mnv2.error().to_string();
  EXPECT_EQ(mnv2->dimension, 1280);
  EXPECT_EQ(mnv2->mean, (std::array<double, 3>{127.5, 127.5, 127.5}));
  EXPECT_DOUBLE_EQ(mnv2->scale, 1.0 / 127.5);
  EXPECT_EQ(mnv2->batch_size, 4);

  auto r50 = parse_model_spec(tables[1], 1);
  ASSERT_TRUE(r50.ok()) << r50.error().to_string();
  EXPECT_EQ(r50->mean, (std::array<double, 3>{123.675, 116.28, 103.53}));
  EXPECT_EQ(r50->std, (std::array<double, 3>{58.395, 57.12, 57.375}));
  EXPECT_EQ(r50->scale, 1.0);

  auto remote = parse_model_spec(tables[2], 2);
  ASSERT_TRUE(remote.ok()) << remote.error().to_string();
  EXPECT_EQ(remote->timeout_ms, 5000);
}

}  // namespace
}  // namespace deeplens
