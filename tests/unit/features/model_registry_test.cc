#include "features/model_registry.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace deeplens {
namespace {

// A fake behind the module's own interface: returns [index, dimension-1 zeros].
class FakeExtractor final : public Extractor {
 public:
  FakeExtractor(std::string name, int dimension) {
    info_.name = std::move(name);
    info_.dimension = dimension;
  }
  const ModelInfo& info() const override { return info_; }
  Result<std::vector<std::vector<float>>> extract(std::span<const ExtractorInput> batch) override {
    std::vector<std::vector<float>> out;
    for (size_t i = 0; i < batch.size(); ++i) {
      out.emplace_back(static_cast<size_t>(info_.dimension), 0.0f);
      out.back()[0] = static_cast<float>(i);
    }
    return out;
  }

 private:
  ModelInfo info_;
};

ModelSpec spec_named(std::string name, int batch_size = 8) {
  ModelSpec s;
  s.name = std::move(name);
  s.batch_size = batch_size;
  return s;
}

TEST(ModelRegistryTest, FindsExtractorsByNameAndNullForUnknown) {
  ModelRegistry registry;
  ASSERT_TRUE(registry.add(std::make_unique<FakeExtractor>("a", 4), spec_named("a", 2)).ok());
  ASSERT_TRUE(registry.add(std::make_unique<FakeExtractor>("b", 8), spec_named("b")).ok());

  ASSERT_NE(registry.find("a"), nullptr);
  EXPECT_EQ(registry.find("a")->info().dimension, 4);
  EXPECT_EQ(registry.find("b")->info().dimension, 8);
  EXPECT_EQ(registry.find("c"), nullptr);
  EXPECT_EQ(registry.find(""), nullptr);
  ASSERT_NE(registry.spec("a"), nullptr);
  EXPECT_EQ(registry.spec("a")->batch_size, 2);
  EXPECT_EQ(registry.spec("c"), nullptr);
  EXPECT_EQ(registry.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(registry.size(), 2u);
}

TEST(ModelRegistryTest, FirstModelIsDefaultUntilSetDefault) {
  ModelRegistry registry;
  EXPECT_EQ(registry.default_model(), "");
  ASSERT_TRUE(registry.add(std::make_unique<FakeExtractor>("a", 4), spec_named("a")).ok());
  ASSERT_TRUE(registry.add(std::make_unique<FakeExtractor>("b", 4), spec_named("b")).ok());
  EXPECT_EQ(registry.default_model(), "a");
  ASSERT_TRUE(registry.set_default("b").ok());
  EXPECT_EQ(registry.default_model(), "b");

  auto st = registry.set_default("zzz");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(registry.default_model(), "b");
}

TEST(ModelRegistryTest, RefusesDuplicateNamesAndMismatchedSpecs) {
  ModelRegistry registry;
  ASSERT_TRUE(registry.add(std::make_unique<FakeExtractor>("a", 4), spec_named("a")).ok());
  auto dup = registry.add(std::make_unique<FakeExtractor>("a", 8), spec_named("a"));
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, ErrorCode::kAlreadyExists);
  EXPECT_EQ(registry.find("a")->info().dimension, 4) << "the first registration stays";

  auto mismatch = registry.add(std::make_unique<FakeExtractor>("x", 4), spec_named("y"));
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(mismatch.error().code, ErrorCode::kInvalidArgument);

  auto null = registry.add(nullptr, spec_named("n"));
  EXPECT_FALSE(null.ok());
  EXPECT_EQ(registry.names(), std::vector<std::string>{"a"});
}

TEST(ModelRegistryTest, ConcurrentReadersSeeTheSameModels) {
  ModelRegistry registry;
  for (const char* n : {"a", "b", "c"})
    ASSERT_TRUE(registry.add(std::make_unique<FakeExtractor>(n, 3), spec_named(n)).ok());
  std::atomic<int> found{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        if (registry.find("b") && !registry.find("d") && registry.names().size() == 3 &&
            registry.default_model() == "a")
          found.fetch_add(1);
      }
    });
  }
  for (auto& r : readers) r.join();
  EXPECT_EQ(found.load(), 4000);
}

}  // namespace
}  // namespace deeplens
