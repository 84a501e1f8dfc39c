// The Qdrant backend's failure modes, against the contract-checking stand-in (each test starts its
// own, so stopping or slowing one touches no other test): Qdrant down and back, a collection with
// another dimension, a slow server, 5xx answers, a wrong api-key, a collection deleted behind our
// back; and that the contract check itself fails a request that is not Qdrant's API.
#include <gtest/gtest.h>

#include <chrono>

#include "support/qdrant_server.h"
#include "vectors/qdrant/qdrant_vector_store.h"

namespace deeplens {
namespace {

using namespace std::chrono_literals;
using testing::QdrantServer;

QdrantOptions options_for(const QdrantServer& server) {
  QdrantOptions o;
  o.endpoint = server.url();
  o.timeout = 5000ms;
  o.max_attempts = 2;
  return o;
}

#define REQUIRE_STANDIN(server) \
  if (!(server).standin()) GTEST_SKIP() << "needs the stand-in's fault injection (DEEPLENS_TEST_QDRANT_URL is set)"

const std::string kCollection = collection_name("acme-corp", "resnet50");

TEST(QdrantFailures, DownThenBackStoresAndSearchesAgainWithTheCollectionRecreated) {
  QdrantServer server;
  REQUIRE_STANDIN(server);
  auto store = QdrantVectorStore::open(options_for(server));
  auto index = store->open_collection(kCollection, 4);
  ASSERT_TRUE(index.ok()) << index.error().to_string();
  ASSERT_TRUE((*index)->upsert("img_a", std::vector<float>{1, 0, 0, 0}).ok());

  server.stop();
  auto write = (*index)->upsert("img_b", std::vector<float>{0, 1, 0, 0});
  ASSERT_FALSE(write.ok());
  EXPECT_EQ(write.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(write.error().context.at("service"), "vectors");
  auto search = (*index)->search(std::vector<float>{1, 0, 0, 0}, 3, -1.0f);
  ASSERT_FALSE(search.ok());
  EXPECT_EQ(search.error().code, ErrorCode::kUnavailable);
  auto lookup = store->lookup_collection(collection_name("other", "resnet50"));
  ASSERT_FALSE(lookup.ok()) << "a store that is down cannot tell whether a collection exists";
  EXPECT_EQ(lookup.error().context.at("service"), "vectors");
  EXPECT_FALSE(store->ping().ok());

  server.start();  // an empty stand-in: the collection is gone, as after a Qdrant wipe
  ASSERT_TRUE(store->ping().ok());
  ASSERT_TRUE((*index)->upsert("img_b", std::vector<float>{0, 1, 0, 0}).ok());
  auto hits = (*index)->search(std::vector<float>{0, 1, 0, 0}, 3, -1.0f);
  ASSERT_TRUE(hits.ok()) << hits.error().to_string();
  ASSERT_EQ(hits->size(), 1u);
  EXPECT_EQ((*hits)[0].id, "img_b");
  EXPECT_TRUE(server.violations().empty());
}

TEST(QdrantFailures, ACollectionWithAnotherDimensionIsAFailedPrecondition) {
  QdrantServer server;
  auto first = QdrantVectorStore::open(options_for(server));
  const std::string name = collection_name("dims-" + std::to_string(::getpid()), "resnet50");
  ASSERT_TRUE(first->open_collection(name, 4).ok());
  auto second = QdrantVectorStore::open(options_for(server));  // another process, another model version
  auto clash = second->open_collection(name, 8);
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(clash.error().message.find("4-d"), std::string::npos) << clash.error().message;
  auto found = second->lookup_collection(name);
  ASSERT_TRUE(found.ok());
  ASSERT_NE(*found, nullptr);
  EXPECT_EQ((*found)->dimension(), 4u);
  EXPECT_TRUE(server.violations().empty());
}

TEST(QdrantFailures, ACollectionReplacedByOneOfAnotherDimensionIsNamedAsSuch) {
  QdrantServer server;
  auto store = QdrantVectorStore::open(options_for(server));
  const std::string name = collection_name("replaced-" + std::to_string(::getpid()), "resnet50");
  auto index = store->open_collection(name, 4);
  ASSERT_TRUE(index.ok()) << index.error().to_string();
  ASSERT_TRUE(store->call("DELETE", "/collections/" + name, nullptr).ok());
  ASSERT_TRUE(store->call("PUT", "/collections/" + name, {{"vectors", {{"size", 3}, {"distance", "Cosine"}}}}).ok());
  auto write = (*index)->upsert("img_a", std::vector<float>{1, 0, 0, 0});
  ASSERT_FALSE(write.ok());
  EXPECT_EQ(write.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(write.error().message.find("3-d"), std::string::npos) << write.error().message;
  auto search = (*index)->search(std::vector<float>{1, 0, 0, 0}, 3, -1.0f);
  ASSERT_FALSE(search.ok());
  EXPECT_EQ(search.error().code, ErrorCode::kFailedPrecondition);
  ASSERT_TRUE(store->call("DELETE", "/collections/" + name, nullptr).ok());
  EXPECT_TRUE(server.violations().empty());
}

TEST(QdrantFailures, APointCarriesImageTenantModelAndModelVersionInItsPayload) {
  QdrantServer server;
  auto store = QdrantVectorStore::open(options_for(server));
  const std::string tenant = "payload-" + std::to_string(::getpid());
  const std::string name = collection_name(tenant, "resnet50");
  auto index = store->open_collection(name, 4);
  ASSERT_TRUE(index.ok()) << index.error().to_string();
  ASSERT_TRUE((*index)->upsert_with_version("img_a", std::vector<float>{1, 0, 0, 0}, "v2.7").ok());
  auto r = store->call("POST", "/collections/" + name + "/points/scroll",
                       {{"filter", {{"must", {{{"key", "tenantId"}, {"match", {{"value", tenant}}}}}}}},
                        {"with_payload", true},
                        {"limit", 10}});
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ((*r)["points"].size(), 1u);
  const auto& point = (*r)["points"][0];
  EXPECT_EQ(point["id"], qdrant::uuid_v5(qdrant::kPointNamespace, "img_a"));
  EXPECT_EQ(point["payload"]["imageId"], "img_a");
  EXPECT_EQ(point["payload"]["tenantId"], tenant);
  EXPECT_EQ(point["payload"]["modelName"], "resnet50");
  EXPECT_EQ(point["payload"]["modelVersion"], "v2.7");
  EXPECT_TRUE(server.violations().empty());
}

TEST(QdrantFailures, ASlowServerTimesOutWithinTheConfiguredTimeout) {
  QdrantServer server;
  REQUIRE_STANDIN(server);
  QdrantOptions o = options_for(server);
  o.timeout = 200ms;
  o.max_attempts = 1;
  auto store = QdrantVectorStore::open(o);
  auto index = store->open_collection(kCollection, 4);
  ASSERT_TRUE(index.ok()) << index.error().to_string();
  server.set_faults(1500);
  const auto t0 = std::chrono::steady_clock::now();
  auto hits = (*index)->search(std::vector<float>{1, 0, 0, 0}, 3, -1.0f);
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(hits.ok());
  EXPECT_EQ(hits.error().code, ErrorCode::kTimeout);
  EXPECT_NE(hits.error().message.find("200 ms"), std::string::npos) << hits.error().message;
  EXPECT_LT(took, 1200ms);
  server.set_faults(0);
}

TEST(QdrantFailures, ServerErrorsAreRetriedThenUnavailable) {
  QdrantServer server;
  REQUIRE_STANDIN(server);
  auto store = QdrantVectorStore::open(options_for(server));
  auto index = store->open_collection(kCollection, 4);
  ASSERT_TRUE(index.ok());
  server.set_faults(0, 503);
  auto write = (*index)->upsert("img_a", std::vector<float>{1, 0, 0, 0});
  ASSERT_FALSE(write.ok());
  EXPECT_EQ(write.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(write.error().message.find("503"), std::string::npos) << write.error().message;
  server.set_faults(0, 0);
  EXPECT_TRUE((*index)->upsert("img_a", std::vector<float>{1, 0, 0, 0}).ok());
}

TEST(QdrantFailures, AWrongApiKeyIsNamedAndTheRightOneWorks) {
  QdrantServer server(QdrantServer::Options{true, "s3cret-key"});
  REQUIRE_STANDIN(server);
  QdrantOptions o = options_for(server);
  o.api_key = "wrong";
  auto refused = QdrantVectorStore::open(o)->open_collection(kCollection, 4);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(refused.error().message.find("api-key"), std::string::npos) << refused.error().message;
  EXPECT_EQ(refused.error().to_string().find("wrong"), std::string::npos) << "the key is never in an error";
  o.api_key = "s3cret-key";
  auto store = QdrantVectorStore::open(o);
  auto index = store->open_collection(kCollection, 4);
  ASSERT_TRUE(index.ok()) << index.error().to_string();
  EXPECT_TRUE((*index)->upsert("img_a", std::vector<float>{1, 0, 0, 0}).ok());
}

TEST(QdrantFailures, TheContractCheckFailsRequestsThatAreNotQdrantsApi) {
  QdrantServer server;
  REQUIRE_STANDIN(server);
  auto store = QdrantVectorStore::open(options_for(server));
  ASSERT_TRUE(store->open_collection(kCollection, 4).ok());
  ASSERT_TRUE(server.violations().empty());
  // The deprecated search family is gone from the document.
  auto old = store->call("POST", "/collections/" + kCollection + "/points/search",
                         {{"vector", {1, 0, 0, 0}}, {"limit", 3}});
  EXPECT_FALSE(old.ok());
  // A misspelt filter key (Filter has additionalProperties: false).
  auto typo = store->call("POST", "/collections/" + kCollection + "/points/query",
                          {{"query", {1, 0, 0, 0}}, {"filter", {{"mustt", nlohmann::json::array()}}}});
  EXPECT_FALSE(typo.ok());
  EXPECT_EQ(typo.error().code, ErrorCode::kInvalidArgument);
  // A points query without the tenant filter.
  auto unscoped = store->call("POST", "/collections/" + kCollection + "/points/count", {{"exact", true}});
  EXPECT_TRUE(unscoped.ok());
  const auto violations = server.violations();
  ASSERT_EQ(violations.size(), 3u);
  EXPECT_NE(violations[0].find("points/search is not an operation"), std::string::npos) << violations[0];
  EXPECT_NE(violations[1].find("request schema"), std::string::npos) << violations[1];
  EXPECT_NE(violations[2].find("no tenant filter"), std::string::npos) << violations[2];
}

}  // namespace
}  // namespace deeplens
