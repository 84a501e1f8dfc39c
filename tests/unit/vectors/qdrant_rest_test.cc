#include "vectors/qdrant/qdrant_rest.h"

#include <gtest/gtest.h>

#include "vectors/vector_index.h"

namespace deeplens::qdrant {
namespace {

TEST(QdrantRest, UuidV5MatchesRfc4122) {
  // Python: uuid.uuid5(uuid.NAMESPACE_DNS, "python.org")
  EXPECT_EQ(uuid_v5("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "python.org"), "886313e1-3b8a-5372-9b90-0c9aee199e5d");
  // The documented namespace: uuid.uuid5(uuid.NAMESPACE_URL, "urn:deeplens:qdrant:point-id")
  EXPECT_EQ(uuid_v5("6ba7b811-9dad-11d1-80b4-00c04fd430c8", "urn:deeplens:qdrant:point-id"), kPointNamespace);
}

TEST(QdrantRest, PointIdsAreDeterministicAndPerTenantInPayloadMode) {
  auto a = target_of(collection_name("acme-corp", "resnet50"), Multitenancy::kPayload).value();
  auto b = target_of(collection_name("other", "resnet50"), Multitenancy::kPayload).value();
  EXPECT_EQ(point_id(a, "img_1", Multitenancy::kCollection), uuid_v5(kPointNamespace, "img_1"));
  EXPECT_EQ(point_id(a, "img_1", Multitenancy::kCollection), point_id(b, "img_1", Multitenancy::kCollection));
  EXPECT_EQ(point_id(a, "img_1", Multitenancy::kPayload), uuid_v5(kPointNamespace, "acme-corp/img_1"));
  EXPECT_NE(point_id(a, "img_1", Multitenancy::kPayload), point_id(b, "img_1", Multitenancy::kPayload));
}

TEST(QdrantRest, TargetsFollowTheMultitenancyMode) {
  auto t = target_of("tenant_acme-corp_mobilenet_v2_vectors", Multitenancy::kCollection);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->tenant, "acme-corp");
  EXPECT_EQ(t->model, "mobilenet_v2");
  EXPECT_EQ(t->collection, "tenant_acme-corp_mobilenet_v2_vectors");
  auto p = target_of("tenant_acme-corp_mobilenet_v2_vectors", Multitenancy::kPayload);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->collection, "deeplens_mobilenet_v2_vectors");
  EXPECT_EQ(model_of_shared(p->collection), "mobilenet_v2");
  EXPECT_EQ(model_of_shared("tenant_acme-corp_mobilenet_v2_vectors"), "");
  for (const char* bad : {"", "tenant__x_vectors", "tenant_acme_vectors", "other_acme_m_vectors", "tenant_a_b/c_vectors",
                          "tenant_A_m_vectors"})
    EXPECT_FALSE(target_of(bad, Multitenancy::kCollection).ok()) << bad;
}

TEST(QdrantRest, EveryFilterStartsWithTheTenant) {
  auto t = target_of(collection_name("acme-corp", "resnet50"), Multitenancy::kPayload).value();
  EXPECT_EQ(tenant_filter(t).dump(), R"({"must":[{"key":"tenantId","match":{"value":"acme-corp"}}]})");
  EXPECT_EQ(tenant_filter(t, match("imageId", "img_1")).dump(),
            R"({"must":[{"key":"tenantId","match":{"value":"acme-corp"}},{"key":"imageId","match":{"value":"img_1"}}]})");
}

TEST(QdrantRest, TheUrlNamesQdrantAndAnHttpEndpoint) {
  EXPECT_EQ(endpoint_of("qdrant+http://127.0.0.1:6333").value(), "http://127.0.0.1:6333");
  EXPECT_EQ(endpoint_of("qdrant+https://q.example.com/").value(), "https://q.example.com");
  for (const char* bad : {"http://127.0.0.1:6333", "qdrant://h:6333", "qdrant+ftp://h", "qdrant+http://", "qdrant+http://u:p@h"}) {
    auto r = endpoint_of(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find("qdrant+http://"), std::string::npos);
  }
  EXPECT_EQ(parse_multitenancy("payload").value(), Multitenancy::kPayload);
  EXPECT_FALSE(parse_multitenancy("tenant").ok());
}

TEST(QdrantRest, ErrorTextIsQdrantsStatusError) {
  EXPECT_EQ(error_text(R"({"status":{"error":"Not found: Collection `x` doesn't exist!"},"time":0})"),
            "Not found: Collection `x` doesn't exist!");
  EXPECT_EQ(error_text("plain text"), "plain text");
}

}  // namespace
}  // namespace deeplens::qdrant
