// Start-up migration of legacy collection names: acme-corp and acmecorp used to share
// tenant_acmecorp_<model>_vectors; after the migration each tenant's vectors are in its own
// collection and searches by either tenant see only its own images.
#include <gtest/gtest.h>

#include <vector>

#include "pipeline/collection_migration.h"
#include "store/sqlite/sqlite_database.h"
#include "store/sqlite/sqlite_metadata_store.h"
#include "support/pipeline_harness.h"
#include "vectors/hnsw/hnsw_store.h"

namespace deeplens {
namespace {

ImageRecord image_of(const std::string& id, const std::string& tenant, const std::string& model) {
  ImageRecord r;
  r.image_id = id;
  r.tenant_id = tenant;
  r.file_name = id + ".jpg";
  r.storage_path = "x/" + id;
  r.content_type = "image/jpeg";
  r.sha256 = id;
  r.format = "jpeg";
  r.models = {model};
  r.correlation_id = "evt_" + id;
  return r;
}

TEST(CollectionMigration, SplitsASharedLegacyCollectionByTenantAndRenamesPunctuatedModels) {
  const auto dir = testing::make_temp_dir("deeplens-collections");
  SystemClock clock;
  auto db = SqliteDatabase::open(dir / "deeplens.db");
  ASSERT_TRUE(db.ok()) << db.error().to_string();
  auto store = SqliteMetadataStore::open(**db, clock);
  ASSERT_TRUE(store.ok()) << store.error().to_string();
  auto vectors = HnswVectorStore::open((dir / "vectors").string());
  ASSERT_TRUE(vectors.ok()) << vectors.error().to_string();
  MetadataStore& meta = **store;  // the interface, as the pipeline sees it
  for (const char* t : {"acme-corp", "acmecorp"}) ASSERT_TRUE(meta.create_tenant({t, clock.now(), {}, 0, 0}).ok());
  auto no_event = [](const ImageRecord& i) { return OutboxMessage{"t", i.image_id, "{}", {}}; };
  // Three images as the old code indexed them: two tenants in one collection, and a model with '-'.
  const std::vector<float> a{1, 0, 0, 0}, b{0, 1, 0, 0}, c{0, 0, 1, 0};
  ASSERT_TRUE(meta.create_image(image_of("img_a", "acme-corp", "m"), true, no_event).ok());
  ASSERT_TRUE(meta.create_image(image_of("img_b", "acmecorp", "m"), true, no_event).ok());
  ASSERT_TRUE(meta.create_image(image_of("img_c", "acmecorp", "res-net"), true, no_event).ok());
  auto shared = (*vectors)->open_collection(legacy_collection_name("acme-corp", "m"), 4);
  ASSERT_TRUE(shared.ok());
  ASSERT_TRUE((*shared)->upsert("img_a", a).ok());
  ASSERT_TRUE((*shared)->upsert("img_b", b).ok());
  auto punctuated = (*vectors)->open_collection(legacy_collection_name("acmecorp", "res-net"), 4);
  ASSERT_TRUE(punctuated.ok());
  ASSERT_TRUE((*punctuated)->upsert("img_c", c).ok());

  auto moved = migrate_collection_names(**store, **vectors);
  ASSERT_TRUE(moved.ok()) << moved.error().to_string();
  EXPECT_EQ(*moved, 2);

  VectorIndex* acme_corp = (*vectors)->find_collection(collection_name("acme-corp", "m"));
  VectorIndex* acmecorp = (*vectors)->find_collection(collection_name("acmecorp", "m"));
  VectorIndex* resnet = (*vectors)->find_collection(collection_name("acmecorp", "res-net"));
  ASSERT_NE(acme_corp, nullptr);
  ASSERT_NE(acmecorp, nullptr);
  ASSERT_NE(resnet, nullptr);
  EXPECT_NE(acme_corp, acmecorp);
  EXPECT_EQ(acme_corp->count(), 1u);
  EXPECT_TRUE(acme_corp->get("img_a").ok());
  EXPECT_EQ(acmecorp->count(), 1u);  // acmecorp's name did not change: its vector stayed
  EXPECT_TRUE(acmecorp->get("img_b").ok());
  EXPECT_FALSE(acmecorp->get("img_a").ok());
  EXPECT_TRUE(resnet->get("img_c").ok());
  EXPECT_FALSE((*punctuated)->get("img_c").ok());

  // A second start finds nothing left to move.
  auto again = migrate_collection_names(**store, **vectors);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0);
}

}  // namespace
}  // namespace deeplens
