#include <cmath>
#include <map>

#include <gtest/gtest.h>

#include "vectors/vector_index.h"

namespace deeplens {
namespace {

TEST(CollectionName, IsTheSpecNameWhenNothingNeedsEscaping) {
  EXPECT_EQ(collection_name("acmecorp", "resnet50"), "tenant_acmecorp_resnet50_vectors");
  EXPECT_EQ(collection_name("acme", "mobilenet_v2"), "tenant_acme_mobilenet_v2_vectors");
}

TEST(CollectionName, TenantsThatDifferOnlyInPunctuationGetDifferentCollections) {
  EXPECT_EQ(collection_name("acme-corp", "resnet50"), "tenant_acme-corp_resnet50_vectors");
  EXPECT_NE(collection_name("acme-corp", "resnet50"), collection_name("acmecorp", "resnet50"));
}

TEST(CollectionName, ModelsThatDifferOnlyInPunctuationGetDifferentCollections) {
  EXPECT_NE(collection_name("acme", "a-b"), collection_name("acme", "a_b"));
  // The tenant ends at the first '_': a model with '_' cannot pose as another tenant's collection.
  EXPECT_NE(collection_name("a", "b_c"), collection_name("a-b", "c"));
}

TEST(CollectionName, IsInjectiveOverValidNames) {
  const char* tenants[] = {"a", "a-b", "ab", "a-b-c", "abc", "a-bc", "ab-c", "b"};
  const char* models[] = {"c", "c_d", "c-d", "cd", "_c", "c_", "b_c", "b-c", "bc"};
  std::map<std::string, std::pair<std::string, std::string>> seen;
  for (const char* t : tenants)
    for (const char* m : models) {
      auto [it, fresh] = seen.try_emplace(collection_name(t, m), t, m);
      EXPECT_TRUE(fresh) << t << "/" << m << " collides with " << it->second.first << "/" << it->second.second;
    }
}

TEST(CollectionName, CharactersOutsideValidNamesAreEscapedNotDropped) {
  EXPECT_EQ(collection_name("acme", "../../etc"), "tenant_acme_~2e~2e~2f~2e~2e~2fetc_vectors");
  EXPECT_NE(collection_name("ACME", "m"), collection_name("acme", "m"));
}

TEST(CollectionName, NamesAreOnlySafeCharacters) {
  const std::string name = collection_name("A/b\\c..d", "x/y z\n");
  for (char c : name) {
    EXPECT_TRUE((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '~') << name;
  }
}

TEST(LegacyCollectionName, DropsTheTenantsPunctuationAsBefore) {
  EXPECT_EQ(legacy_collection_name("acme-corp", "resnet50"), "tenant_acmecorp_resnet50_vectors");
  EXPECT_EQ(legacy_collection_name("acme", "a-b"), "tenant_acme_a_b_vectors");
}

// Only what the default upsert_batch() uses; the rest is not reached.
class MapIndex final : public VectorIndex {
 public:
  const std::string& name() const override { return name_; }
  size_t dimension() const override { return 2; }
  size_t count() const override { return vectors_.size(); }
  std::vector<std::string> ids() const override {
    std::vector<std::string> out;
    for (const auto& [id, v] : vectors_) out.push_back(id);
    return out;
  }
  Status upsert(std::string_view id, std::span<const float> v) override {
    vectors_[std::string(id)] = std::vector<float>(v.begin(), v.end());
    return ok_status();
  }
  Status remove(std::string_view id) override {
    vectors_.erase(std::string(id));
    return ok_status();
  }
  Result<std::vector<float>> get(std::string_view id) const override {
    auto it = vectors_.find(std::string(id));
    if (it == vectors_.end()) return Error(ErrorCode::kNotFound, "absent");
    return it->second;
  }
  using VectorIndex::search;
  Result<std::vector<SearchHit>> search(std::span<const float>, size_t, float, const SearchOptions&) const override {
    return std::vector<SearchHit>{};
  }

 private:
  std::string name_ = "map";
  std::map<std::string, std::vector<float>> vectors_;
};

TEST(VectorIndexDefaultBatch, AppliesInOrderSoALaterDuplicateWins) {
  MapIndex index;
  const std::vector<float> a = {1, 0}, b = {0, 1};
  const std::vector<VectorUpsert> batch = {{"x", a}, {"y", a}, {"x", b}};
  ASSERT_TRUE(index.upsert_batch(batch).ok());
  EXPECT_EQ(index.count(), 2u);
  EXPECT_EQ(*index.get("x"), b);
}

TEST(VectorIndexDefaultBatch, ABadElementRejectsTheBatchBeforeAnythingIsApplied) {
  MapIndex index;
  const std::vector<float> good = {1, 0}, nan = {std::nanf(""), 0}, wide = {1, 0, 0};
  for (const auto& bad : {std::vector<VectorUpsert>{{"a", good}, {"b", nan}},
                          std::vector<VectorUpsert>{{"a", good}, {"b", wide}},
                          std::vector<VectorUpsert>{{"a", good}, {"", good}}}) {
    auto s = index.upsert_batch(bad);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(index.count(), 0u);
  }
}

}  // namespace
}  // namespace deeplens
