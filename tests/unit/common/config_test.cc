#include "common/config.h"

#include <gtest/gtest.h>

#include <array>
#include <filesystem>
#include <fstream>

namespace deeplens {
namespace {

namespace fs = std::filesystem;

const std::array kKeys = {
    ConfigKeySpec{"server.listen", ConfigType::kString, "127.0.0.1:8080", ""},
    ConfigKeySpec{"server.threads", ConfigType::kInt, "2", ""},
    ConfigKeySpec{"pipeline.enabled", ConfigType::kBool, "true", ""},
    ConfigKeySpec{"upload.models", ConfigType::kList, "builtin", ""},
    ConfigKeySpec{"search.min_score", ConfigType::kDouble, "0.5", ""},
};

class ConfigTest : public ::testing::Test {
 protected:
  fs::path write(const std::string& toml) {
    path_ = fs::temp_directory_path() / ("deeplens-config-" + std::to_string(::getpid()) + ".toml");
    std::ofstream(path_) << toml;
    return path_;
  }
  void TearDown() override {
    if (!path_.empty()) fs::remove(path_);
  }
  fs::path path_;
};

TEST_F(ConfigTest, DefaultsApplyWhenNothingIsSet) {
  auto c = Config::load(kKeys, {});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->str("server.listen"), "127.0.0.1:8080");
  EXPECT_EQ(c->integer("server.threads"), 2);
  EXPECT_TRUE(c->boolean("pipeline.enabled"));
  EXPECT_EQ(c->list("upload.models"), std::vector<std::string>{"builtin"});
  EXPECT_DOUBLE_EQ(c->number("search.min_score"), 0.5);
  EXPECT_EQ(c->origin("server.threads"), "default");
}

TEST_F(ConfigTest, FileThenEnvironmentThenFlagsInOrderOfPrecedence) {
  ConfigSources s;
  s.file = write("[server]\nlisten = \"0.0.0.0:9000\"\nthreads = 4\n[upload]\nmodels = [\"a\", \"b\"]\n");
  s.environment = {{"DEEPLENS_SERVER_THREADS", "8"}};
  s.overrides = {"search.min_score=0.9"};
  auto c = Config::load(kKeys, s);
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->str("server.listen"), "0.0.0.0:9000");
  EXPECT_EQ(c->origin("server.listen"), "file " + path_.string());
  EXPECT_EQ(c->integer("server.threads"), 8);
  EXPECT_EQ(c->origin("server.threads"), "env DEEPLENS_SERVER_THREADS");
  EXPECT_EQ(c->list("upload.models"), (std::vector<std::string>{"a", "b"}));
  EXPECT_DOUBLE_EQ(c->number("search.min_score"), 0.9);

  s.overrides = {"server.threads=16"};
  auto c2 = Config::load(kKeys, s);
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(c2->integer("server.threads"), 16);
  EXPECT_EQ(c2->origin("server.threads"), "flag");
}

TEST_F(ConfigTest, ErrorsNameTheKeyAndTheSource) {
  ConfigSources s;
  s.environment = {{"DEEPLENS_SERVER_THREADS", "many"}};
  auto c = Config::load(kKeys, s);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().context.at("key"), "server.threads");
  EXPECT_NE(c.error().message.find("DEEPLENS_SERVER_THREADS"), std::string::npos) << c.error().message;

  s.environment.clear();
  s.file = write("[server]\nlistne = \"x\"\n");
  c = Config::load(kKeys, s);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().context.at("key"), "server.listne");
  EXPECT_NE(c.error().message.find("unknown key"), std::string::npos);

  s.file = write("[server]\nthreads = \"four\"\n");
  c = Config::load(kKeys, s);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().context.at("key"), "server.threads");

  s.file.reset();
  s.overrides = {"pipeline.enabled=maybe"};
  c = Config::load(kKeys, s);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().context.at("key"), "pipeline.enabled");
  EXPECT_EQ(c.error().context.at("origin"), "flag");
}

TEST_F(ConfigTest, SyntaxErrorsNameTheFileAndLine) {
  ConfigSources s;
  s.file = write("[server]\nlisten = \n");
  auto c = Config::load(kKeys, s);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().context.at("path"), path_.string());
  EXPECT_EQ(c.error().context.at("line"), "2");
}

TEST_F(ConfigTest, ArrayOfTablesSectionsAreReadRaw) {
  ConfigSources s;
  s.file = write("[[models]]\nname = \"mobilenet_v2\"\ndimension = 1280\nmean = [127.5, 127.5, 127.5]\n"
                 "scale = 0.00784313725490196\n"
                 "[[models]]\nname = \"resnet50\"\nnormalize = true\n");
  s.section_names = {"models"};
  auto c = Config::load(kKeys, s);
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  const auto& models = c->sections("models");
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[0].at("name"), "mobilenet_v2");
  EXPECT_EQ(models[0].at("dimension"), "1280");
  EXPECT_EQ(models[0].at("mean"), "127.5,127.5,127.5");
  EXPECT_EQ(models[0].at("scale"), "0.00784313725490196") << "floats keep every digit";
  EXPECT_EQ(models[1].at("normalize"), "true");
}

TEST(ConfigEnvName, UppercasesAndReplacesDots) {
  EXPECT_EQ(Config::env_name("server.listen"), "DEEPLENS_SERVER_LISTEN");
  EXPECT_EQ(Config::env_name("data_dir"), "DEEPLENS_DATA_DIR");
}

}  // namespace
}  // namespace deeplens
