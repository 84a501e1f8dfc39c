// One conformance suite for every MetadataStore: the same tests run against the SQLite store (a
// temp file) and the PostgreSQL store (a real PostgreSQL 15 server started once for the whole
// suite, a fresh database per test). Then PostgreSQL-only behaviour: many threads updating the
// same images lose nothing, and a server restart mid-run is survived without reopening the store.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "store/postgres/postgres_metadata_store.h"
#include "store/sqlite/sqlite_database.h"
#include "store/sqlite/sqlite_metadata_store.h"
#include "support/postgres_server.h"

namespace deeplens {
namespace {

using namespace std::chrono_literals;

// --- one PostgreSQL server for the whole test program, started on first use.

std::unique_ptr<testing::PostgresServer>& postgres_slot() {
  static std::unique_ptr<testing::PostgresServer> server;
  return server;
}

testing::PostgresServer& postgres_server() {
  auto& slot = postgres_slot();
  if (!slot) slot = std::make_unique<testing::PostgresServer>();
  return *slot;
}

class PostgresEnvironment : public ::testing::Environment {
 public:
  void TearDown() override { postgres_slot().reset(); }
};
[[maybe_unused]] ::testing::Environment* const kPostgresEnvironment =
    ::testing::AddGlobalTestEnvironment(new PostgresEnvironment);

// --- the store under test, behind one factory.

class StoreHarness {
 public:
  virtual ~StoreHarness() = default;
  virtual MetadataStore& store() = 0;
};

class SqliteHarness final : public StoreHarness {
 public:
  explicit SqliteHarness(const Clock& clock) {
    std::string templ = (std::filesystem::temp_directory_path() / "deeplens-store-XXXXXX").string();
    if (!::mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = templ;
    db_ = std::move(SqliteDatabase::open(dir_ / "deeplens.db")).value();
    // No log appender: enqueue writes the outbox table, as with an external bus.
    store_ = std::move(SqliteMetadataStore::open(*db_, clock)).value();
  }
  ~SqliteHarness() override {
    store_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  MetadataStore& store() override { return *store_; }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteMetadataStore> store_;
};

class PostgresHarness final : public StoreHarness {
 public:
  PostgresHarness(const Clock& clock, PostgresOptions options = {}) {
    url_ = postgres_server().create_database();
    auto store = PostgresMetadataStore::open(url_, clock, options);
    if (!store) throw std::runtime_error("open: " + store.error().to_string());
    store_ = std::move(store).value();
  }
  MetadataStore& store() override { return *store_; }
  const std::string& url() const { return url_; }

 private:
  std::string url_;
  std::unique_ptr<PostgresMetadataStore> store_;
};

std::unique_ptr<StoreHarness> make_harness(const std::string& backend, const Clock& clock) {
  if (backend == "sqlite") return std::make_unique<SqliteHarness>(clock);
  return std::make_unique<PostgresHarness>(clock);
}

// --- test data

const Timestamp kT0 = Timestamp(std::chrono::milliseconds(1764324000000));  // 2025-11-28T10:00:00Z

ImageRecord make_image(const std::string& id, const std::string& tenant = "acme-corp", const std::string& sha = "",
                       Timestamp created = kT0, const std::string& idempotency_key = "") {
  ImageRecord i;
  i.image_id = id;
  i.tenant_id = tenant;
  i.file_name = id + ".jpg";
  i.storage_path = "tenant-" + tenant + "/images/2025/11/28/" + id + ".jpg";
  i.file_size = 204800;
  i.content_type = "image/jpeg";
  i.sha256 = sha.empty() ? "sha-" + id : sha;
  i.width = 640;
  i.height = 480;
  i.format = "jpeg";
  i.color_profile = "sRGB";
  i.uploaded_by = "user-1";
  i.processing_options_json = R"({"models":["resnet50"],"generateThumbnail":true})";
  i.models = {"resnet50", "clip"};
  i.idempotency_key = idempotency_key;
  i.correlation_id = "evt_" + id;
  i.created_at = created;
  i.updated_at = created;
  return i;
}

OutboxMessage event_for(const ImageRecord& i) {
  return {"deeplens.images.uploaded", i.image_id, R"({"imageId":")" + i.image_id + R"("})",
          {{"eventType", "ImageUploadedEvent"}, {"tenantId", i.tenant_id}}};
}

OutboxMessage message(const std::string& key, const std::string& payload) {
  return {"deeplens.features.extraction", key, payload, {{"eventType", "FeatureExtractionRequestedEvent"}}};
}

StepRecord make_step(const std::string& image_id, const std::string& model, const std::string& step) {
  StepRecord s;
  s.image_id = image_id;
  s.model = model;
  s.step = step;
  return s;
}

Tenant make_tenant(const std::string& id, Timestamp created, const TenantLimits& limits = {}) {
  Tenant t;
  t.id = id;
  t.created_at = created;
  t.limits = limits;
  return t;
}

ApiKey make_key(const std::string& id, const std::string& tenant, Timestamp created, const std::string& name = "",
                const std::string& prefix = "") {
  ApiKey k;
  k.id = id;
  k.tenant_id = tenant;
  k.name = name;
  k.prefix = prefix;
  k.created_at = created;
  return k;
}

class StoreConformanceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { harness_ = make_harness(GetParam(), clock_); }
  void TearDown() override { harness_.reset(); }

  MetadataStore& store() { return harness_->store(); }

  ImageRecord create(const ImageRecord& image) {
    auto out = store().create_image(image, false, event_for);
    EXPECT_TRUE(out.ok()) << (out.ok() ? "" : out.error().to_string());
    EXPECT_EQ(out->kind, CreateImageOutcome::Kind::kCreated);
    return out->image;
  }

  // Creates an image of `size` bytes for acme-corp under quota, expecting it to be stored.
  void create_within(const std::string& id, int64_t size, const StorageQuota& quota) {
    ImageRecord image = make_image(id);
    image.file_size = size;
    auto out = store().create_image(image, false, event_for, quota);
    ASSERT_TRUE(out.ok()) << id << ": " << (out.ok() ? "" : out.error().to_string());
    EXPECT_EQ(out->kind, CreateImageOutcome::Kind::kCreated);
  }

  int64_t backlog() {
    auto n = store().outbox_backlog();
    EXPECT_TRUE(n.ok());
    return n.ok() ? *n : -1;
  }

  ImageStatus status_of(const std::string& id, const std::string& tenant = "acme-corp") {
    auto image = store().get_image(tenant, id);
    EXPECT_TRUE(image.ok()) << id;
    return image.ok() ? image->status : ImageStatus::kUploaded;
  }

  ManualClock clock_{kT0};
  std::unique_ptr<StoreHarness> harness_;
};

#define ASSERT_OK(expr)                                                         \
  do {                                                                          \
    const auto& ok_status_ = (expr);                                            \
    ASSERT_TRUE(ok_status_.ok()) << #expr << ": " << ok_status_.error().to_string(); \
  } while (0)

TEST_P(StoreConformanceTest, TenantsAndApiKeys) {
  ASSERT_OK(store().create_tenant(make_tenant("globex", kT0)));
  ASSERT_OK(store().create_tenant(make_tenant("acme-corp", kT0 + 5ms)));
  auto again = store().create_tenant(make_tenant("acme-corp", kT0));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kAlreadyExists);

  auto acme = store().get_tenant("acme-corp");
  ASSERT_OK(acme);
  EXPECT_EQ(acme->id, "acme-corp");
  EXPECT_EQ(acme->created_at, kT0 + 5ms);
  EXPECT_EQ(acme->image_count, 0);
  EXPECT_EQ(acme->bytes_stored, 0);
  auto missing = store().get_tenant("initech");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);

  auto all = store().list_tenants();
  ASSERT_OK(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, "acme-corp");
  EXPECT_EQ((*all)[1].id, "globex");

  ASSERT_OK(store().add_api_key(make_key("key_aaaa", "acme-corp", kT0), "aaaa"));
  ASSERT_OK(store().add_api_key(make_key("key_bbbb", "globex", kT0), "bbbb"));
  auto key = store().find_api_key("aaaa");
  ASSERT_OK(key);
  EXPECT_EQ(key->tenant_id, "acme-corp");
  EXPECT_EQ(key->id, "key_aaaa");
  EXPECT_EQ(store().find_api_key("bbbb")->tenant_id, "globex");
  auto unknown = store().find_api_key("cccc");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(unknown.error().message, "unknown API key");
}

TEST_P(StoreConformanceTest, TenantLimitsRoundTripAndCanBeCleared) {
  TenantLimits limits;
  limits.max_images = 10;
  limits.max_bytes = int64_t{5} << 32;  // beyond 32 bits
  limits.upload_rate = 2.5;
  limits.search_rate = 0.1;
  ASSERT_OK(store().create_tenant(make_tenant("acme-corp", kT0, limits)));
  ASSERT_OK(store().create_tenant(make_tenant("globex", kT0)));

  auto acme = store().get_tenant("acme-corp");
  ASSERT_OK(acme);
  EXPECT_EQ(acme->limits.max_images, 10);
  EXPECT_EQ(acme->limits.max_bytes, int64_t{5} << 32);
  ASSERT_TRUE(acme->limits.upload_rate.has_value());
  EXPECT_DOUBLE_EQ(*acme->limits.upload_rate, 2.5);
  ASSERT_TRUE(acme->limits.search_rate.has_value());
  EXPECT_DOUBLE_EQ(*acme->limits.search_rate, 0.1);
  auto globex = store().get_tenant("globex");
  ASSERT_OK(globex);
  EXPECT_FALSE(globex->limits.max_images.has_value());
  EXPECT_FALSE(globex->limits.max_bytes.has_value());
  EXPECT_FALSE(globex->limits.upload_rate.has_value());
  EXPECT_FALSE(globex->limits.search_rate.has_value());

  // Replaced as a whole: an absent value goes back to the default.
  TenantLimits changed;
  changed.max_bytes = 5000;
  changed.search_rate = 3.0;
  ASSERT_OK(store().set_tenant_limits("acme-corp", changed));
  auto all = store().list_tenants();
  ASSERT_OK(all);
  ASSERT_EQ(all->size(), 2u);
  const Tenant& listed = (*all)[0];
  EXPECT_EQ(listed.id, "acme-corp");
  EXPECT_FALSE(listed.limits.max_images.has_value());
  EXPECT_EQ(listed.limits.max_bytes, 5000);
  EXPECT_FALSE(listed.limits.upload_rate.has_value());
  ASSERT_TRUE(listed.limits.search_rate.has_value());
  EXPECT_DOUBLE_EQ(*listed.limits.search_rate, 3.0);
  EXPECT_FALSE((*all)[1].limits.max_bytes.has_value());  // globex untouched

  ASSERT_OK(store().set_tenant_limits("acme-corp", TenantLimits{}));
  acme = store().get_tenant("acme-corp");
  ASSERT_OK(acme);
  EXPECT_FALSE(acme->limits.max_images.has_value());
  EXPECT_FALSE(acme->limits.max_bytes.has_value());
  EXPECT_FALSE(acme->limits.upload_rate.has_value());
  EXPECT_FALSE(acme->limits.search_rate.has_value());
  EXPECT_EQ(acme->created_at, kT0);

  auto unknown = store().set_tenant_limits("initech", changed);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(store().get_tenant("initech").error().code, ErrorCode::kNotFound);
}

TEST_P(StoreConformanceTest, ApiKeysAreFoundByHashAndListedByCreationTime) {
  ASSERT_OK(store().create_tenant(make_tenant("acme-corp", kT0)));
  ASSERT_OK(store().create_tenant(make_tenant("globex", kT0)));
  ASSERT_OK(store().add_api_key(make_key("key_1111", "acme-corp", kT0 + 2s, "ci", "dlk_1111"), "hash-1"));
  ASSERT_OK(store().add_api_key(make_key("key_2222", "acme-corp", kT0 + 1s, "laptop", "dlk_2222"), "hash-2"));
  ASSERT_OK(store().add_api_key(make_key("key_3333", "globex", kT0, "prod", "dlk_3333"), "hash-3"));

  auto found = store().find_api_key("hash-1");
  ASSERT_OK(found);
  EXPECT_EQ(found->id, "key_1111");
  EXPECT_EQ(found->tenant_id, "acme-corp");
  EXPECT_EQ(found->name, "ci");
  EXPECT_EQ(found->prefix, "dlk_1111");
  EXPECT_EQ(found->created_at, kT0 + 2s);
  EXPECT_FALSE(found->expires_at.has_value());
  EXPECT_FALSE(found->revoked_at.has_value());
  EXPECT_FALSE(found->last_used_at.has_value());
  EXPECT_TRUE(found->usable(kT0 + 24h * 365));

  // Re-adding a stored hash (a configured key, at every start) changes nothing, whatever it says.
  ASSERT_OK(store().add_api_key(make_key("key_9999", "acme-corp", kT0 + 1h, "renamed", "dlk_9999"), "hash-1"));
  found = store().find_api_key("hash-1");
  ASSERT_OK(found);
  EXPECT_EQ(found->id, "key_1111");
  EXPECT_EQ(found->name, "ci");
  EXPECT_EQ(found->created_at, kT0 + 2s);

  auto acme = store().list_api_keys("acme-corp");
  ASSERT_OK(acme);
  std::vector<std::string> ids;
  for (const auto& k : *acme) ids.push_back(k.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"key_2222", "key_1111"}));
  EXPECT_EQ((*acme)[0].name, "laptop");
  EXPECT_EQ((*acme)[0].prefix, "dlk_2222");
  EXPECT_EQ((*acme)[0].tenant_id, "acme-corp");
  auto globex = store().list_api_keys("globex");
  ASSERT_OK(globex);
  ASSERT_EQ(globex->size(), 1u);
  EXPECT_EQ((*globex)[0].id, "key_3333");
  auto none = store().list_api_keys("initech");
  ASSERT_OK(none);
  EXPECT_TRUE(none->empty());

  auto unknown = store().find_api_key("hash-4");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::kNotFound);
}

TEST_P(StoreConformanceTest, RevokingAKeyKeepsTheFirstTimeAndOnlyTheOwnerCanRevoke) {
  ASSERT_OK(store().create_tenant(make_tenant("acme-corp", kT0)));
  ASSERT_OK(store().create_tenant(make_tenant("globex", kT0)));
  ASSERT_OK(store().add_api_key(make_key("key_1111", "acme-corp", kT0), "hash-1"));
  ASSERT_OK(store().add_api_key(make_key("key_3333", "globex", kT0), "hash-3"));

  ASSERT_OK(store().revoke_api_key("acme-corp", "key_1111", kT0 + 10s));
  auto key = store().find_api_key("hash-1");  // revoked keys are still found
  ASSERT_OK(key);
  EXPECT_EQ(key->revoked_at, kT0 + 10s);
  EXPECT_FALSE(key->usable(kT0 + 11s));

  ASSERT_OK(store().revoke_api_key("acme-corp", "key_1111", kT0 + 20s));  // idempotent
  EXPECT_EQ(store().find_api_key("hash-1")->revoked_at, kT0 + 10s);
  auto listed = store().list_api_keys("acme-corp");
  ASSERT_OK(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].revoked_at, kT0 + 10s);

  auto foreign = store().revoke_api_key("acme-corp", "key_3333", kT0 + 30s);
  ASSERT_FALSE(foreign.ok());
  EXPECT_EQ(foreign.error().code, ErrorCode::kNotFound);
  auto theirs = store().find_api_key("hash-3");
  ASSERT_OK(theirs);
  EXPECT_FALSE(theirs->revoked_at.has_value());
  EXPECT_TRUE(theirs->usable(kT0 + 30s));
  EXPECT_EQ(store().revoke_api_key("acme-corp", "key_nope", kT0).error().code, ErrorCode::kNotFound);
}

TEST_P(StoreConformanceTest, KeyExpiryRoundTripsAndEndsUsability) {
  ASSERT_OK(store().create_tenant(make_tenant("acme-corp", kT0)));
  ApiKey expiring = make_key("key_1111", "acme-corp", kT0);
  expiring.expires_at = kT0 + 1h;
  ASSERT_OK(store().add_api_key(expiring, "hash-1"));
  ASSERT_OK(store().add_api_key(make_key("key_2222", "acme-corp", kT0 + 1ms), "hash-2"));

  auto key = store().find_api_key("hash-1");
  ASSERT_OK(key);
  EXPECT_EQ(key->expires_at, kT0 + 1h);
  EXPECT_TRUE(key->usable(kT0 + 59min));
  EXPECT_FALSE(key->usable(kT0 + 1h));
  auto listed = store().list_api_keys("acme-corp");
  ASSERT_OK(listed);
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].expires_at, kT0 + 1h);
  EXPECT_FALSE((*listed)[1].expires_at.has_value());
  EXPECT_TRUE((*listed)[1].usable(kT0 + 24h * 3650));
}

TEST_P(StoreConformanceTest, TouchingAKeyOnlyMovesLastUsedForward) {
  ASSERT_OK(store().create_tenant(make_tenant("acme-corp", kT0)));
  ASSERT_OK(store().add_api_key(make_key("key_1111", "acme-corp", kT0), "hash-1"));
  ASSERT_OK(store().add_api_key(make_key("key_2222", "acme-corp", kT0), "hash-2"));

  ASSERT_OK(store().touch_api_key("key_1111", kT0 + 5min));
  EXPECT_EQ(store().find_api_key("hash-1")->last_used_at, kT0 + 5min);
  ASSERT_OK(store().touch_api_key("key_1111", kT0 + 1min));  // a slower request finishing late
  EXPECT_EQ(store().find_api_key("hash-1")->last_used_at, kT0 + 5min);
  ASSERT_OK(store().touch_api_key("key_1111", kT0 + 10min));
  EXPECT_EQ(store().find_api_key("hash-1")->last_used_at, kT0 + 10min);
  EXPECT_FALSE(store().find_api_key("hash-2")->last_used_at.has_value());
}

TEST_P(StoreConformanceTest, ImageQuotaRefusesTheImageBeyondItAndWritesNothing) {
  ASSERT_OK(store().create_tenant(make_tenant("acme-corp", kT0)));
  const StorageQuota quota{3, 0};
  for (const char* id : {"img_1", "img_2", "img_3"}) {
    auto out = store().create_image(make_image(id), false, event_for, quota);
    ASSERT_OK(out);
    EXPECT_EQ(out->kind, CreateImageOutcome::Kind::kCreated);
  }
  auto fourth = store().create_image(make_image("img_4"), false, event_for, quota);
  ASSERT_FALSE(fourth.ok());
  EXPECT_EQ(fourth.error().code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(fourth.error().context.at("reason"), "quota_images");
  EXPECT_EQ(fourth.error().context.at("limit"), "3");
  EXPECT_EQ(store().get_image("acme-corp", "img_4").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(backlog(), 3);
  auto pending = store().pending_outbox("relay", 10, 30s);
  ASSERT_OK(pending);
  for (const auto& row : *pending) EXPECT_NE(row.message.key, "img_4");
  auto acme = store().get_tenant("acme-corp");
  ASSERT_OK(acme);
  EXPECT_EQ(acme->image_count, 3);
  EXPECT_EQ(acme->bytes_stored, 3 * 204800);

  // At the limit, a duplicate upload is still answered with the stored image: it adds nothing.
  auto dup = store().create_image(make_image("img_5", "acme-corp", "sha-img_1"), false, event_for, quota);
  ASSERT_OK(dup);
  EXPECT_EQ(dup->kind, CreateImageOutcome::Kind::kDuplicate);
  // The quota is the caller's, per call: unlimited (0) stores the image.
  auto unlimited = store().create_image(make_image("img_6"), false, event_for, StorageQuota{});
  ASSERT_OK(unlimited);
  EXPECT_EQ(unlimited->kind, CreateImageOutcome::Kind::kCreated);
  EXPECT_EQ(store().get_tenant("acme-corp")->image_count, 4);
}

TEST_P(StoreConformanceTest, ByteQuotaRefusesTheImageThatWouldCrossIt) {
  ASSERT_OK(store().create_tenant(make_tenant("acme-corp", kT0)));
  const StorageQuota quota{0, 500000};
  create_within("img_1", 204800, quota);
  create_within("img_2", 204800, quota);
  ImageRecord big = make_image("img_3");
  big.file_size = 204800;  // 614400 > 500000
  auto refused = store().create_image(big, false, event_for, quota);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(refused.error().context.at("reason"), "quota_bytes");
  EXPECT_EQ(refused.error().context.at("limit"), "500000");
  EXPECT_EQ(store().get_image("acme-corp", "img_3").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(backlog(), 2);
  EXPECT_EQ(store().get_tenant("acme-corp")->bytes_stored, 409600);

  create_within("img_4", 90400, quota);  // exactly at the limit is allowed
  auto acme = store().get_tenant("acme-corp");
  ASSERT_OK(acme);
  EXPECT_EQ(acme->bytes_stored, 500000);
  EXPECT_EQ(acme->image_count, 3);
  ImageRecord one_more = make_image("img_5");
  one_more.file_size = 1;
  auto over = store().create_image(one_more, false, event_for, quota);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().context.at("reason"), "quota_bytes");
  EXPECT_EQ(backlog(), 3);
}

TEST_P(StoreConformanceTest, UsageCountersFollowCreatesAndDeletesButNotReplays) {
  ASSERT_OK(store().create_tenant(make_tenant("acme-corp", kT0)));
  ASSERT_OK(store().create_tenant(make_tenant("globex", kT0)));
  auto usage = [&](const std::string& tenant) {
    auto t = store().get_tenant(tenant);
    EXPECT_TRUE(t.ok());
    return t.ok() ? std::make_pair(t->image_count, t->bytes_stored) : std::make_pair(int64_t{-1}, int64_t{-1});
  };
  const StorageQuota unlimited{};
  create_within("img_a", 1000, unlimited);
  create_within("img_b", 3000, unlimited);
  EXPECT_EQ(usage("acme-corp"), std::make_pair(int64_t{2}, int64_t{4000}));
  EXPECT_EQ(usage("globex"), std::make_pair(int64_t{0}, int64_t{0}));

  // A duplicate, an idempotent replay and a rejected id add nothing.
  auto dup = store().create_image(make_image("img_c", "acme-corp", "sha-img_a"), false, event_for);
  ASSERT_OK(dup);
  EXPECT_EQ(dup->kind, CreateImageOutcome::Kind::kDuplicate);
  ImageRecord keyed = make_image("img_k", "acme-corp", "", kT0, "key-1");
  keyed.file_size = 500;
  ASSERT_OK(store().create_image(keyed, false, event_for));
  EXPECT_EQ(usage("acme-corp"), std::make_pair(int64_t{3}, int64_t{4500}));
  auto replay = store().create_image(make_image("img_r", "acme-corp", "", kT0, "key-1"), false, event_for);
  ASSERT_OK(replay);
  EXPECT_EQ(replay->kind, CreateImageOutcome::Kind::kIdempotentReplay);
  auto same_id = store().create_image(make_image("img_a", "acme-corp", "other-sha"), true, event_for);
  ASSERT_FALSE(same_id.ok());
  EXPECT_EQ(same_id.error().code, ErrorCode::kAlreadyExists);
  EXPECT_EQ(usage("acme-corp"), std::make_pair(int64_t{3}, int64_t{4500}));

  ASSERT_OK(store().delete_image("acme-corp", "img_b"));
  EXPECT_EQ(usage("acme-corp"), std::make_pair(int64_t{2}, int64_t{1500}));
  EXPECT_FALSE(store().delete_image("globex", "img_a").ok());  // not theirs: nothing changes
  EXPECT_EQ(usage("acme-corp"), std::make_pair(int64_t{2}, int64_t{1500}));
  EXPECT_EQ(usage("globex"), std::make_pair(int64_t{0}, int64_t{0}));

  // A deleted image frees its place in the quota.
  const StorageQuota two{2, 0};
  auto full = store().create_image(make_image("img_d"), false, event_for, two);
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code, ErrorCode::kResourceExhausted);
  ASSERT_OK(store().delete_image("acme-corp", "img_a"));
  create_within("img_d", 204800, two);
  EXPECT_EQ(usage("acme-corp"), std::make_pair(int64_t{2}, int64_t{500 + 204800}));
  auto listed = store().list_tenants();
  ASSERT_OK(listed);
  EXPECT_EQ((*listed)[0].image_count, 2);
  EXPECT_EQ((*listed)[0].bytes_stored, 500 + 204800);
}

TEST_P(StoreConformanceTest, RateTokensAreTakenUpToTheBurstAndRefillAtTheRate) {
  const Timestamp t = kT0 + 1h;  // a fixed time, not the store's clock
  auto take = [&](const std::string& bucket, Timestamp at) {
    auto wait = store().take_rate_token(bucket, 2.0, 2.0, at);
    EXPECT_TRUE(wait.ok()) << (wait.ok() ? "" : wait.error().to_string());
    return wait.ok() ? *wait : -1.0;
  };
  EXPECT_EQ(take("upload:acme-corp", t), 0.0);
  EXPECT_EQ(take("upload:acme-corp", t), 0.0);
  EXPECT_NEAR(take("upload:acme-corp", t), 0.5, 1e-9);
  EXPECT_EQ(take("search:acme-corp", t), 0.0);  // another bucket is full
  EXPECT_EQ(take("upload:acme-corp", t + 500ms), 0.0);
  EXPECT_NEAR(take("upload:acme-corp", t + 500ms), 0.5, 1e-9);
  EXPECT_NEAR(take("upload:acme-corp", t + 750ms), 0.25, 1e-9);
  // A long pause refills only up to the burst.
  EXPECT_EQ(take("upload:acme-corp", t + 1h), 0.0);
  EXPECT_EQ(take("upload:acme-corp", t + 1h), 0.0);
  EXPECT_GT(take("upload:acme-corp", t + 1h), 0.0);
}

TEST_P(StoreConformanceTest, CreateImageWritesExactlyOneOutboxRow) {
  const ImageRecord image = make_image("img_1");
  auto out = store().create_image(image, false, event_for);
  ASSERT_OK(out);
  EXPECT_EQ(out->kind, CreateImageOutcome::Kind::kCreated);
  EXPECT_EQ(out->image.image_id, "img_1");

  auto pending = store().pending_outbox("relay", 10, 30s);
  ASSERT_OK(pending);
  ASSERT_EQ(pending->size(), 1u);
  const OutboxMessage expected = event_for(image);
  EXPECT_EQ((*pending)[0].message.topic, expected.topic);
  EXPECT_EQ((*pending)[0].message.key, "img_1");
  EXPECT_EQ((*pending)[0].message.payload, expected.payload);
  EXPECT_EQ((*pending)[0].message.headers, expected.headers);
  EXPECT_EQ(backlog(), 1);
}

TEST_P(StoreConformanceTest, GetImageRoundTripsEveryField) {
  ImageRecord image = make_image("img_rt", "acme-corp", "abc123", kT0 + 17ms, "idem-1");
  image.thumbnail_path = "thumbnails/img_rt.jpg";
  create(image);
  auto got = store().get_image("acme-corp", "img_rt");
  ASSERT_OK(got);
  EXPECT_EQ(got->image_id, image.image_id);
  EXPECT_EQ(got->tenant_id, image.tenant_id);
  EXPECT_EQ(got->file_name, image.file_name);
  EXPECT_EQ(got->storage_path, image.storage_path);
  EXPECT_EQ(got->file_size, image.file_size);
  EXPECT_EQ(got->content_type, image.content_type);
  EXPECT_EQ(got->sha256, image.sha256);
  EXPECT_EQ(got->width, image.width);
  EXPECT_EQ(got->height, image.height);
  EXPECT_EQ(got->format, image.format);
  EXPECT_EQ(got->color_profile, image.color_profile);
  EXPECT_EQ(got->uploaded_by, image.uploaded_by);
  EXPECT_EQ(got->processing_options_json, image.processing_options_json);
  EXPECT_EQ(got->models, image.models);
  EXPECT_EQ(got->status, ImageStatus::kUploaded);
  EXPECT_EQ(got->idempotency_key, "idem-1");
  EXPECT_EQ(got->thumbnail_path, image.thumbnail_path);
  EXPECT_EQ(got->error_code, "");
  EXPECT_EQ(got->correlation_id, image.correlation_id);
  EXPECT_EQ(got->created_at, kT0 + 17ms);
  EXPECT_EQ(got->updated_at, kT0 + 17ms);
  EXPECT_FALSE(got->searchable_after.has_value());

  auto other_tenant = store().get_image("globex", "img_rt");
  ASSERT_FALSE(other_tenant.ok());
  EXPECT_EQ(other_tenant.error().code, ErrorCode::kNotFound);
  auto missing = store().get_image("acme-corp", "img_nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
}

TEST_P(StoreConformanceTest, GetImagesReadsTheTenantsRecordsAndLeavesOutTheRest) {
  create(make_image("img_a", "acme-corp", "sha-a", kT0));
  create(make_image("img_b", "acme-corp", "sha-b", kT0 + 1ms));
  create(make_image("img_g", "globex", "sha-g", kT0 + 2ms));
  ImageRecord quoted = make_image("img_\"q\\", "acme-corp", "sha-q", kT0 + 3ms);  // escaped in a text[] literal
  create(quoted);
  auto got = store().get_images("acme-corp", {"img_b", "img_nope", "img_g", "img_a", "img_\"q\\"});
  ASSERT_OK(got);
  std::vector<std::string> ids;
  for (const auto& r : *got) ids.push_back(r.image_id);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{"img_\"q\\", "img_a", "img_b"}));
  for (const auto& r : *got) {
    EXPECT_EQ(r.tenant_id, "acme-corp");
    if (r.image_id == "img_b") {
      EXPECT_EQ(r.sha256, "sha-b");
    }
  }
  auto none = store().get_images("acme-corp", {});
  ASSERT_OK(none);
  EXPECT_TRUE(none->empty());
}

TEST_P(StoreConformanceTest, ANearDuplicateIsStoredWithTheImageAndListedOnItsOwn) {
  create(make_image("img_a", "acme-corp", "sha-a", kT0));
  create(make_image("img_b", "acme-corp", "sha-b", kT0 + 1ms));
  create(make_image("img_c", "acme-corp", "sha-c", kT0 + 2ms));
  create(make_image("img_g", "globex", "sha-g", kT0 + 3ms));
  for (const char* id : {"img_b", "img_c", "img_g"})
    ASSERT_OK(store().transact([&](MetadataTx& tx) { return tx.set_duplicate_of(id, DuplicateOf{"img_a", 0.9625, "mobilenet_v2"}); }));
  auto b = store().get_image("acme-corp", "img_b");
  ASSERT_OK(b);
  ASSERT_TRUE(b->duplicate_of.has_value());
  EXPECT_EQ(*b->duplicate_of, (DuplicateOf{"img_a", 0.9625, "mobilenet_v2"}));
  auto a = store().get_image("acme-corp", "img_a");
  ASSERT_OK(a);
  EXPECT_FALSE(a->duplicate_of.has_value());
  // Only the tenant's duplicates, newest first, paged like every listing.
  auto page = store().list_images("acme-corp", std::nullopt, 1, "", true);
  ASSERT_OK(page);
  ASSERT_EQ(page->images.size(), 1u);
  EXPECT_EQ(page->images[0].image_id, "img_c");
  ASSERT_FALSE(page->next_cursor.empty());
  auto rest = store().list_images("acme-corp", std::nullopt, 10, page->next_cursor, true);
  ASSERT_OK(rest);
  ASSERT_EQ(rest->images.size(), 1u);
  EXPECT_EQ(rest->images[0].image_id, "img_b");
  EXPECT_TRUE(rest->next_cursor.empty());
  auto all = store().list_images("acme-corp", std::nullopt, 10, "");
  ASSERT_OK(all);
  EXPECT_EQ(all->images.size(), 3u);
  auto by_status = store().list_images("acme-corp", ImageStatus::kCompleted, 10, "", true);
  ASSERT_OK(by_status);
  EXPECT_TRUE(by_status->images.empty());
}

TEST_P(StoreConformanceTest, RepeatedIdempotencyKeyReturnsTheFirstImage) {
  create(make_image("img_a", "acme-corp", "sha-a", kT0, "key-1"));
  auto replay = store().create_image(make_image("img_b", "acme-corp", "sha-b", kT0 + 1s, "key-1"), false, event_for);
  ASSERT_OK(replay);
  EXPECT_EQ(replay->kind, CreateImageOutcome::Kind::kIdempotentReplay);
  EXPECT_EQ(replay->image.image_id, "img_a");
  // Even with the duplicate check off, the key wins.
  auto replay2 = store().create_image(make_image("img_c", "acme-corp", "sha-c", kT0, "key-1"), true, event_for);
  ASSERT_OK(replay2);
  EXPECT_EQ(replay2->kind, CreateImageOutcome::Kind::kIdempotentReplay);
  // Keys are per tenant.
  auto other = store().create_image(make_image("img_d", "globex", "sha-d", kT0, "key-1"), false, event_for);
  ASSERT_OK(other);
  EXPECT_EQ(other->kind, CreateImageOutcome::Kind::kCreated);

  EXPECT_EQ(backlog(), 2);
  EXPECT_EQ(store().get_image("acme-corp", "img_b").error().code, ErrorCode::kNotFound);
}

TEST_P(StoreConformanceTest, SameBytesInTheTenantAreADuplicateUnlessTheCheckIsSkipped) {
  create(make_image("img_a", "acme-corp", "same-sha"));
  auto dup = store().create_image(make_image("img_b", "acme-corp", "same-sha", kT0 + 1s), false, event_for);
  ASSERT_OK(dup);
  EXPECT_EQ(dup->kind, CreateImageOutcome::Kind::kDuplicate);
  EXPECT_EQ(dup->image.image_id, "img_a");
  EXPECT_EQ(backlog(), 1);

  auto other_tenant = store().create_image(make_image("img_c", "globex", "same-sha"), false, event_for);
  ASSERT_OK(other_tenant);
  EXPECT_EQ(other_tenant->kind, CreateImageOutcome::Kind::kCreated);

  auto skipped = store().create_image(make_image("img_d", "acme-corp", "same-sha", kT0 + 2s), true, event_for);
  ASSERT_OK(skipped);
  EXPECT_EQ(skipped->kind, CreateImageOutcome::Kind::kCreated);
  EXPECT_EQ(skipped->image.image_id, "img_d");
  EXPECT_EQ(backlog(), 3);
  ASSERT_OK(store().get_image("acme-corp", "img_d"));
}

TEST_P(StoreConformanceTest, CreatingTheSameImageIdTwiceIsRejected) {
  create(make_image("img_a"));
  auto again = store().create_image(make_image("img_a", "acme-corp", "other-sha"), true, event_for);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kAlreadyExists);
  EXPECT_EQ(backlog(), 1);
}

TEST_P(StoreConformanceTest, ListImagesFiltersByStatusAndPagesWithACursor) {
  // Seven images; two share a timestamp so the image id breaks the tie.
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    const std::string id = "img_" + std::to_string(i);
    const Timestamp at = kT0 + std::chrono::milliseconds(i == 4 ? 3 : i);
    create(make_image(id, "acme-corp", "", at));
  }
  create(make_image("img_other", "globex"));
  ASSERT_OK(store().transact([](MetadataTx& tx) -> Status {
    for (const char* id : {"img_1", "img_4", "img_5"})
      if (auto st = tx.set_image_status(id, ImageStatus::kProcessing); !st) return st;
    return {};
  }));

  std::vector<std::string> seen;
  std::string cursor;
  int pages = 0;
  do {
    auto page = store().list_images("acme-corp", std::nullopt, 3, cursor);
    ASSERT_OK(page);
    ASSERT_LE(page->images.size(), 3u);
    for (const auto& i : page->images) seen.push_back(i.image_id);
    cursor = page->next_cursor;
    ASSERT_LT(++pages, 10);
  } while (!cursor.empty());
  // Newest first; equal timestamps by image id descending.
  EXPECT_EQ(seen, (std::vector<std::string>{"img_6", "img_5", "img_4", "img_3", "img_2", "img_1", "img_0"}));
  EXPECT_EQ(pages, 3);

  auto processing = store().list_images("acme-corp", ImageStatus::kProcessing, 10, "");
  ASSERT_OK(processing);
  std::vector<std::string> got;
  for (const auto& i : processing->images) got.push_back(i.image_id);
  EXPECT_EQ(got, (std::vector<std::string>{"img_5", "img_4", "img_1"}));
  EXPECT_TRUE(processing->next_cursor.empty());

  auto first = store().list_images("acme-corp", ImageStatus::kProcessing, 2, "");
  ASSERT_OK(first);
  ASSERT_EQ(first->images.size(), 2u);
  ASSERT_FALSE(first->next_cursor.empty());
  auto second = store().list_images("acme-corp", ImageStatus::kProcessing, 2, first->next_cursor);
  ASSERT_OK(second);
  ASSERT_EQ(second->images.size(), 1u);
  EXPECT_EQ(second->images[0].image_id, "img_1");
  EXPECT_TRUE(second->next_cursor.empty());

  auto bad = store().list_images("acme-corp", std::nullopt, 3, "not-a-cursor");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
}

TEST_P(StoreConformanceTest, DeleteImageRemovesItsRowAndSteps) {
  create(make_image("img_del"));
  ASSERT_OK(store().transact([](MetadataTx& tx) { return tx.upsert_step(make_step("img_del", "resnet50", "vector_indexing")); }));
  auto wrong_tenant = store().delete_image("globex", "img_del");
  ASSERT_FALSE(wrong_tenant.ok());
  EXPECT_EQ(wrong_tenant.error().code, ErrorCode::kNotFound);

  ASSERT_OK(store().delete_image("acme-corp", "img_del"));
  EXPECT_EQ(store().get_image("acme-corp", "img_del").error().code, ErrorCode::kNotFound);
  auto steps = store().get_steps("img_del");
  ASSERT_OK(steps);
  EXPECT_TRUE(steps->empty());
  auto again = store().delete_image("acme-corp", "img_del");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kNotFound);
}

TEST_P(StoreConformanceTest, StepsAreUpsertedByImageModelAndStep) {
  create(make_image("img_s"));
  StepRecord extraction = make_step("img_s", "resnet50", "feature_extraction");
  extraction.status = StepStatus::kRunning;
  extraction.attempts = 1;
  extraction.started_at = kT0 + 10ms;
  ASSERT_OK(store().transact([&](MetadataTx& tx) -> Status {
    if (auto st = tx.upsert_step(extraction); !st) return st;
    if (auto st = tx.upsert_step(make_step("img_s", "clip", "feature_extraction")); !st) return st;
    return tx.upsert_step(make_step("img_s", "resnet50", "vector_indexing"));
  }));

  extraction.status = StepStatus::kCompleted;
  extraction.attempts = 2;
  extraction.completed_at = kT0 + 60ms;
  extraction.duration_ms = 50;
  extraction.last_error = "TIMEOUT: first attempt";
  extraction.collection_name = "tenant_acme-corp_resnet50_vectors";
  ASSERT_OK(store().transact([&](MetadataTx& tx) { return tx.upsert_step(extraction); }));

  auto steps = store().get_steps("img_s");
  ASSERT_OK(steps);
  ASSERT_EQ(steps->size(), 3u);
  // Ordered by model, then step.
  EXPECT_EQ((*steps)[0].model, "clip");
  EXPECT_EQ((*steps)[0].status, StepStatus::kPending);
  EXPECT_FALSE((*steps)[0].started_at.has_value());
  EXPECT_FALSE((*steps)[0].duration_ms.has_value());
  const StepRecord& s = (*steps)[1];
  EXPECT_EQ(s.model, "resnet50");
  EXPECT_EQ(s.step, "feature_extraction");
  EXPECT_EQ(s.status, StepStatus::kCompleted);
  EXPECT_EQ(s.attempts, 2);
  EXPECT_EQ(s.started_at, kT0 + 10ms);
  EXPECT_EQ(s.completed_at, kT0 + 60ms);
  EXPECT_EQ(s.duration_ms, 50);
  EXPECT_EQ(s.last_error, "TIMEOUT: first attempt");
  EXPECT_EQ(s.collection_name, "tenant_acme-corp_resnet50_vectors");
  EXPECT_EQ((*steps)[2].step, "vector_indexing");

  // The same view inside a transaction.
  ASSERT_OK(store().transact([&](MetadataTx& tx) -> Status {
    auto in_tx = tx.get_steps("img_s");
    if (!in_tx) return std::move(in_tx).error();
    EXPECT_EQ(in_tx->size(), 3u);
    return {};
  }));
}

TEST_P(StoreConformanceTest, FailedTransactionLeavesNothingBehind) {
  create(make_image("img_rb"));
  const int64_t before = backlog();
  Status st = store().transact([&](MetadataTx& tx) -> Status {
    if (auto s = tx.set_image_status("img_rb", ImageStatus::kFailed, "BOOM", "it broke"); !s) return s;
    if (auto s = tx.set_thumbnail("img_rb", "thumbnails/x.jpg"); !s) return s;
    if (auto s = tx.upsert_step(make_step("img_rb", "resnet50", "feature_extraction")); !s) return s;
    if (auto s = tx.mark_processed("g", "evt_1"); !s) return s;
    if (auto s = tx.enqueue(message("img_rb", "{}")); !s) return s;
    DeadLetter d;
    d.topic = "t";
    d.key = "img_rb";
    d.payload = "{}";
    d.stage = "extract";
    d.error_code = "X";
    d.error_message = "y";
    if (auto s = tx.add_dead_letter(d); !s) return s;
    if (auto s = tx.schedule_retry(kT0 + 1s, message("img_rb", "{}")); !s) return s;
    auto claimed = tx.claim_completion("img_rb", kT0);
    if (!claimed) return std::move(claimed).error();
    return Error(ErrorCode::kInternal, "stage failed after its writes");
  });
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kInternal);
  EXPECT_EQ(st.error().message, "stage failed after its writes");

  auto image = store().get_image("acme-corp", "img_rb");
  ASSERT_OK(image);
  EXPECT_EQ(image->status, ImageStatus::kUploaded);
  EXPECT_EQ(image->thumbnail_path, "");
  EXPECT_EQ(image->error_code, "");
  EXPECT_TRUE(store().get_steps("img_rb")->empty());
  EXPECT_EQ(backlog(), before);
  EXPECT_TRUE(store().list_dead_letters(true, 10)->empty());
  EXPECT_FALSE(store().next_retry_due()->has_value());
  ASSERT_OK(store().transact([](MetadataTx& tx) -> Status {
    auto p = tx.is_processed("g", "evt_1");
    if (!p) return std::move(p).error();
    EXPECT_FALSE(*p);
    // The completion was rolled back too: it can still be claimed.
    auto c = tx.claim_completion("img_rb", kT0);
    if (!c) return std::move(c).error();
    EXPECT_TRUE(*c);
    return {};
  }));
}

TEST_P(StoreConformanceTest, ProcessedEventsAreRememberedPerGroup) {
  auto check = [&](const std::string& group, const std::string& id) {
    bool seen = false;
    EXPECT_TRUE(store().transact([&](MetadataTx& tx) -> Status {
      auto p = tx.is_processed(group, id);
      if (!p) return std::move(p).error();
      seen = *p;
      return {};
    }).ok());
    return seen;
  };
  EXPECT_FALSE(check("orchestrator", "evt_1"));
  ASSERT_OK(store().transact([](MetadataTx& tx) -> Status {
    if (auto s = tx.mark_processed("orchestrator", "evt_1"); !s) return s;
    return tx.mark_processed("orchestrator", "evt_1");  // marking twice is harmless
  }));
  EXPECT_TRUE(check("orchestrator", "evt_1"));
  EXPECT_FALSE(check("extractor", "evt_1"));
  EXPECT_FALSE(check("orchestrator", "evt_2"));
}

TEST_P(StoreConformanceTest, CompletionIsClaimedOnlyOnce) {
  create(make_image("img_c"));
  clock_.advance(5s);
  ASSERT_OK(store().transact([](MetadataTx& tx) {
    return tx.set_image_status("img_c", ImageStatus::kFailed, "TRANSIENT", "will retry");
  }));
  std::vector<bool> claims;
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK(store().transact([&](MetadataTx& tx) -> Status {
      auto c = tx.claim_completion("img_c", kT0 + 6s);
      if (!c) return std::move(c).error();
      claims.push_back(*c);
      return {};
    }));
  }
  EXPECT_EQ(claims, (std::vector<bool>{true, false}));
  auto image = store().get_image("acme-corp", "img_c");
  ASSERT_OK(image);
  EXPECT_EQ(image->status, ImageStatus::kCompleted);
  EXPECT_EQ(image->searchable_after, kT0 + 6s);
  EXPECT_EQ(image->error_code, "");
  EXPECT_EQ(image->error_message, "");
  EXPECT_EQ(image->updated_at, kT0 + 5s);
}

TEST_P(StoreConformanceTest, OutboxIsRelayedInOrderAndSentRowsLeave) {
  create(make_image("img_o"));
  ASSERT_OK(store().transact([](MetadataTx& tx) -> Status {
    for (int i = 1; i <= 4; ++i)
      if (auto s = tx.enqueue(message("img_o", "{\"n\":" + std::to_string(i) + "}")); !s) return s;
    return {};
  }));
  EXPECT_EQ(backlog(), 5);
  auto first = store().pending_outbox("relay-a", 3, 30s);
  ASSERT_OK(first);
  ASSERT_EQ(first->size(), 3u);
  EXPECT_EQ((*first)[0].message.topic, "deeplens.images.uploaded");
  EXPECT_EQ((*first)[1].message.payload, "{\"n\":1}");
  EXPECT_EQ((*first)[2].message.payload, "{\"n\":2}");
  EXPECT_EQ((*first)[1].message.headers, message("", "").headers);
  EXPECT_LT((*first)[0].seq, (*first)[1].seq);
  EXPECT_LT((*first)[1].seq, (*first)[2].seq);

  ASSERT_OK(store().mark_outbox_sent({(*first)[0].seq, (*first)[1].seq}));
  ASSERT_OK(store().mark_outbox_sent({}));
  EXPECT_EQ(backlog(), 3);
  // The third row is still relay-a's (taken, not confirmed): another relay must not publish past it,
  // or a later event could overtake an earlier one of the same image.
  EXPECT_TRUE(store().pending_outbox("relay-b", 10, 30s)->empty());
  // relay-a itself starts again from its first unsent row, renews it, and takes what follows.
  clock_.advance(20s);
  auto again = store().pending_outbox("relay-a", 10, 30s);
  ASSERT_OK(again);
  ASSERT_EQ(again->size(), 3u);
  EXPECT_EQ((*again)[0].seq, (*first)[2].seq);
  EXPECT_EQ((*again)[1].message.payload, "{\"n\":3}");
  EXPECT_EQ((*again)[2].message.payload, "{\"n\":4}");

  // The lease runs from the renewal: after 29 s the rows are still relay-a's, after 30 s relay-b
  // takes them over (relay-a died).
  clock_.advance(29s);
  EXPECT_TRUE(store().pending_outbox("relay-b", 10, 30s)->empty());
  clock_.advance(1001ms);
  auto expired = store().pending_outbox("relay-b", 10, 30s);
  ASSERT_OK(expired);
  ASSERT_EQ(expired->size(), 3u);
  EXPECT_EQ((*expired)[0].seq, (*first)[2].seq);
  EXPECT_EQ((*expired)[0].message.payload, "{\"n\":2}");
  std::vector<int64_t> seqs;
  for (const auto& r : *expired) seqs.push_back(r.seq);
  ASSERT_OK(store().mark_outbox_sent(seqs));
  EXPECT_EQ(backlog(), 0);
  clock_.advance(1h);
  EXPECT_TRUE(store().pending_outbox("relay-a", 10, 30s)->empty());
}

TEST_P(StoreConformanceTest, ScheduledRetriesAreReleasedWhenDueAndNotBefore) {
  EXPECT_FALSE(store().next_retry_due()->has_value());
  ASSERT_OK(store().transact([](MetadataTx& tx) -> Status {
    if (auto s = tx.schedule_retry(kT0 + 2000ms, message("img_late", "late")); !s) return s;
    return tx.schedule_retry(kT0 + 1000ms, message("img_early", "early"));
  }));
  auto due = store().next_retry_due();
  ASSERT_OK(due);
  EXPECT_EQ(*due, kT0 + 1000ms);

  auto none = store().release_due_retries(kT0 + 999ms, 10);
  ASSERT_OK(none);
  EXPECT_EQ(*none, 0);
  EXPECT_EQ(backlog(), 0);

  auto one = store().release_due_retries(kT0 + 1000ms, 10);
  ASSERT_OK(one);
  EXPECT_EQ(*one, 1);
  auto pending = store().pending_outbox("relay", 10, 30s);
  ASSERT_OK(pending);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].message.key, "img_early");
  EXPECT_EQ((*pending)[0].message.payload, "early");
  EXPECT_EQ((*pending)[0].message.headers, message("", "").headers);
  EXPECT_EQ(*store().next_retry_due(), kT0 + 2000ms);

  auto rest = store().release_due_retries(kT0 + 60s, 10);
  ASSERT_OK(rest);
  EXPECT_EQ(*rest, 1);
  EXPECT_EQ(backlog(), 2);
  EXPECT_FALSE(store().next_retry_due()->has_value());
  EXPECT_EQ(*store().release_due_retries(kT0 + 60s, 10), 0);
}

TEST_P(StoreConformanceTest, DeadLettersAreListedAndReplayed) {
  create(make_image("img_dl"));
  create(make_image("img_done"));
  {
    auto uploaded = store().pending_outbox("relay", 10, 30s);
    ASSERT_OK(uploaded);
    ASSERT_EQ(uploaded->size(), 2u);
    ASSERT_OK(store().mark_outbox_sent({(*uploaded)[0].seq, (*uploaded)[1].seq}));
  }
  clock_.advance(1s);
  ASSERT_OK(store().transact([](MetadataTx& tx) -> Status {
    if (auto s = tx.set_image_status("img_dl", ImageStatus::kFailed, "EXTRACTION_FAILED", "model crashed"); !s) return s;
    for (const char* id : {"img_dl", "img_done"}) {
      DeadLetter d;
      d.topic = "deeplens.features.extraction";
      d.key = id;
      d.payload = std::string("{\"imageId\":\"") + id + "\"}";
      d.stage = "feature_extraction";
      d.error_code = "EXTRACTION_FAILED";
      d.error_message = "model crashed";
      d.image_id = id;
      d.tenant_id = "acme-corp";
      d.attempts = 3;
      if (auto s = tx.add_dead_letter(d); !s) return s;
    }
    DeadLetter poison;  // undecodable: no image, no tenant
    poison.topic = "deeplens.images.uploaded";
    poison.key = "k";
    poison.payload = "not json";
    poison.stage = "orchestration";
    poison.error_code = "POISON";
    poison.error_message = "undecodable";
    if (auto s = tx.add_dead_letter(poison); !s) return s;
    return tx.claim_completion("img_done", kT0).ok() ? Status() : Error(ErrorCode::kInternal, "claim");
  }));

  auto letters = store().list_dead_letters(false, 10);
  ASSERT_OK(letters);
  ASSERT_EQ(letters->size(), 3u);
  const DeadLetter& first = (*letters)[0];
  EXPECT_EQ(first.topic, "deeplens.features.extraction");
  EXPECT_EQ(first.key, "img_dl");
  EXPECT_EQ(first.payload, "{\"imageId\":\"img_dl\"}");
  EXPECT_EQ(first.stage, "feature_extraction");
  EXPECT_EQ(first.error_code, "EXTRACTION_FAILED");
  EXPECT_EQ(first.error_message, "model crashed");
  EXPECT_EQ(first.image_id, "img_dl");
  EXPECT_EQ(first.tenant_id, "acme-corp");
  EXPECT_EQ(first.attempts, 3);
  EXPECT_EQ(first.created_at, kT0 + 1s);
  EXPECT_FALSE(first.replayed_at.has_value());
  EXPECT_EQ((*letters)[2].image_id, "");
  EXPECT_EQ((*letters)[2].tenant_id, "");
  EXPECT_EQ(store().list_dead_letters(false, 2)->size(), 2u);

  auto got = store().get_dead_letter(first.id);
  ASSERT_OK(got);
  EXPECT_EQ(got->payload, first.payload);
  EXPECT_EQ(store().get_dead_letter(first.id + 1000).error().code, ErrorCode::kNotFound);

  clock_.advance(1s);
  ASSERT_OK(store().replay_dead_letter(first.id, message("img_dl", "{\"replay\":1}")));
  EXPECT_EQ(status_of("img_dl"), ImageStatus::kProcessing);
  EXPECT_EQ(store().get_image("acme-corp", "img_dl")->error_code, "");
  auto pending = store().pending_outbox("relay", 10, 30s);
  ASSERT_OK(pending);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].message.payload, "{\"replay\":1}");

  // A completed image stays completed; the event is still enqueued.
  ASSERT_OK(store().replay_dead_letter((*letters)[1].id, message("img_done", "{\"replay\":2}")));
  EXPECT_EQ(status_of("img_done"), ImageStatus::kCompleted);
  EXPECT_EQ(backlog(), 2);

  auto twice = store().replay_dead_letter(first.id, message("img_dl", "{}"));
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_EQ(backlog(), 2);

  auto open = store().list_dead_letters(false, 10);
  ASSERT_OK(open);
  ASSERT_EQ(open->size(), 1u);
  EXPECT_EQ((*open)[0].error_code, "POISON");
  auto all = store().list_dead_letters(true, 10);
  ASSERT_OK(all);
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].replayed_at, kT0 + 2s);
}

TEST_P(StoreConformanceTest, DeadLettersAreListedPerTenant) {
  ASSERT_OK(store().transact([](MetadataTx& tx) -> Status {
    for (const auto& [image, tenant] : std::vector<std::pair<const char*, const char*>>{
             {"img_a1", "tenant-a"}, {"img_b1", "tenant-b"}, {"img_a2", "tenant-a"}, {"", ""}}) {
      DeadLetter d;
      d.topic = "deeplens.features.extraction";
      d.key = image;
      d.payload = "{}";
      d.stage = "feature_extraction";
      d.error_code = "EXTRACTION_FAILED";
      d.error_message = "boom";
      d.image_id = image;
      d.tenant_id = tenant;
      d.attempts = 1;
      if (auto st = tx.add_dead_letter(d); !st) return st;
    }
    return {};
  }));
  auto a = store().list_dead_letters(false, 10, "tenant-a");
  ASSERT_OK(a);
  ASSERT_EQ(a->size(), 2u);
  EXPECT_EQ((*a)[0].image_id, "img_a1");
  EXPECT_EQ((*a)[1].image_id, "img_a2");
  EXPECT_EQ(store().list_dead_letters(false, 1, "tenant-a")->size(), 1u);
  EXPECT_EQ(store().list_dead_letters(false, 10, "tenant-b")->size(), 1u);
  EXPECT_TRUE(store().list_dead_letters(false, 10, "tenant-c")->empty());
  EXPECT_EQ(store().list_dead_letters(false, 10)->size(), 4u);  // every tenant's, the undecodable too
  create(make_image("img_a1"));
  ASSERT_OK(store().replay_dead_letter((*a)[0].id, message("img_a1", "{}")));
  EXPECT_EQ(store().list_dead_letters(false, 10, "tenant-a")->size(), 1u);
  EXPECT_EQ(store().list_dead_letters(true, 10, "tenant-a")->size(), 2u);
}

TEST_P(StoreConformanceTest, ScheduledRetriesAreListedSoonestFirstWithoutReleasingThem) {
  EXPECT_TRUE(store().list_scheduled_retries(10)->empty());
  ASSERT_OK(store().transact([&](MetadataTx& tx) -> Status {
    if (auto st = tx.schedule_retry(kT0 + 3s, message("img_3", "three")); !st) return st;
    if (auto st = tx.schedule_retry(kT0 + 1s, message("img_1", "one")); !st) return st;
    return tx.schedule_retry(kT0 + 2s, message("img_2", "two"));
  }));
  auto listed = store().list_scheduled_retries(10);
  ASSERT_OK(listed);
  ASSERT_EQ(listed->size(), 3u);
  EXPECT_EQ((*listed)[0].due_at, kT0 + 1s);
  EXPECT_EQ((*listed)[0].message.key, "img_1");
  EXPECT_EQ((*listed)[0].message.payload, "one");
  EXPECT_EQ((*listed)[2].message.key, "img_3");
  EXPECT_EQ(store().list_scheduled_retries(2)->size(), 2u);
  EXPECT_EQ(*store().release_due_retries(kT0 + 1s, 10), 1);  // listing released nothing
  EXPECT_EQ(store().list_scheduled_retries(10)->size(), 2u);
}

TEST_P(StoreConformanceTest, StepActivityCountsRunningAndRecentlyCompletedSteps) {
  EXPECT_TRUE(store().step_activity(kT0)->empty());
  create(make_image("img_s"));
  ASSERT_OK(store().transact([](MetadataTx& tx) -> Status {
    int i = 0;
    for (const char* model : {"m1", "m2", "m3"}) {  // completed at kT0+1s, +2s, +3s
      StepRecord s = make_step("img_s", model, "feature_extraction");
      s.status = StepStatus::kCompleted;
      s.completed_at = kT0 + std::chrono::seconds(++i);
      if (auto st = tx.upsert_step(s); !st) return st;
    }
    for (const char* model : {"m4", "m5"}) {
      StepRecord s = make_step("img_s", model, "feature_extraction");
      s.status = StepStatus::kRunning;
      if (auto st = tx.upsert_step(s); !st) return st;
    }
    StepRecord idx = make_step("img_s", "m1", "vector_indexing");
    idx.status = StepStatus::kRunning;
    if (auto st = tx.upsert_step(idx); !st) return st;
    StepRecord failed = make_step("img_s", "m9", "feature_extraction");  // neither running nor completed
    failed.status = StepStatus::kFailed;
    return tx.upsert_step(failed);
  }));
  auto activity = store().step_activity(kT0 + 2s);
  ASSERT_OK(activity);
  ASSERT_EQ(activity->size(), 2u);
  EXPECT_EQ((*activity)[0].step, "feature_extraction");
  EXPECT_EQ((*activity)[0].running, 2);
  EXPECT_EQ((*activity)[0].completed, 2);  // at +2s and +3s
  EXPECT_EQ((*activity)[1].step, "vector_indexing");
  EXPECT_EQ((*activity)[1].running, 1);
  EXPECT_EQ((*activity)[1].completed, 0);
}

TEST_P(StoreConformanceTest, TrimProcessedForgetsOnlyOldMarkers) {
  ASSERT_OK(store().transact([](MetadataTx& tx) { return tx.mark_processed("g", "evt_old"); }));
  clock_.advance(1h);
  ASSERT_OK(store().transact([](MetadataTx& tx) { return tx.mark_processed("g", "evt_new"); }));
  ASSERT_OK(store().trim_processed(kT0 + 30min));
  ASSERT_OK(store().transact([](MetadataTx& tx) -> Status {
    EXPECT_FALSE(*tx.is_processed("g", "evt_old"));
    EXPECT_TRUE(*tx.is_processed("g", "evt_new"));
    return {};
  }));
}

TEST_P(StoreConformanceTest, RecentStepDurationAveragesTheLastCompletedSteps) {
  auto none = store().recent_step_duration_ms("feature_extraction", 10);
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
  create(make_image("img_d"));
  ASSERT_OK(store().transact([](MetadataTx& tx) -> Status {
    const std::vector<std::pair<const char*, int64_t>> runs = {{"m1", 100}, {"m2", 200}, {"m3", 300}, {"m4", 401}};
    int i = 0;
    for (const auto& [model, ms] : runs) {
      StepRecord s = make_step("img_d", model, "feature_extraction");
      s.status = StepStatus::kCompleted;
      s.completed_at = kT0 + std::chrono::seconds(++i);
      s.duration_ms = ms;
      if (auto st = tx.upsert_step(s); !st) return st;
    }
    StepRecord running = make_step("img_d", "m5", "feature_extraction");  // not completed: ignored
    running.status = StepStatus::kRunning;
    running.duration_ms = 100000;
    if (auto st = tx.upsert_step(running); !st) return st;
    StepRecord other = make_step("img_d", "m1", "vector_indexing");
    other.status = StepStatus::kCompleted;
    other.completed_at = kT0 + 10s;
    other.duration_ms = 5;
    return tx.upsert_step(other);
  }));
  auto last2 = store().recent_step_duration_ms("feature_extraction", 2);
  ASSERT_OK(last2);
  ASSERT_TRUE(last2->has_value());
  EXPECT_DOUBLE_EQ(**last2, 350.5);
  EXPECT_DOUBLE_EQ(**store().recent_step_duration_ms("feature_extraction", 100), 250.25);
  EXPECT_DOUBLE_EQ(**store().recent_step_duration_ms("vector_indexing", 100), 5.0);
}

TEST_P(StoreConformanceTest, CountByStatusCountsEveryTenant) {
  auto empty = store().count_by_status();
  ASSERT_OK(empty);
  EXPECT_TRUE(empty->empty());
  create(make_image("img_1"));
  create(make_image("img_2"));
  create(make_image("img_3", "globex"));
  ASSERT_OK(store().transact([](MetadataTx& tx) { return tx.set_image_status("img_3", ImageStatus::kProcessing); }));
  auto counts = store().count_by_status();
  ASSERT_OK(counts);
  EXPECT_EQ(*counts, (std::vector<std::pair<std::string, int64_t>>{{"processing", 1}, {"uploaded", 2}}));
}

TEST_P(StoreConformanceTest, PingAnswersWhileTheBackendIsUp) { ASSERT_OK(store().ping()); }

// --- webhooks (issue #15)

WebhookEndpoint make_webhook(const std::string& id, const std::string& tenant, std::vector<std::string> events,
                             Timestamp created = kT0) {
  WebhookEndpoint e;
  e.id = id;
  e.tenant_id = tenant;
  e.url = "https://hooks.example.com/" + id;
  e.events = std::move(events);
  e.description = "desc " + id;
  e.secret = "sealed-" + id;
  e.created_at = e.updated_at = created;
  return e;
}

TEST_P(StoreConformanceTest, WebhookEndpointsRoundTripPerTenantAndStopAtTheLimit) {
  auto& w = store().webhooks();
  ASSERT_OK(store().create_tenant(make_tenant("acme-corp", kT0)));
  ASSERT_OK(w.create_webhook(make_webhook("wh_1", "acme-corp", {"processing.completed", "image.deleted"}), 2));
  ASSERT_OK(w.create_webhook(make_webhook("wh_2", "acme-corp", {"image.uploaded"}, kT0 + 1s), 2));
  auto third = w.create_webhook(make_webhook("wh_3", "acme-corp", {"image.uploaded"}), 2);
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.error().code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(third.error().context.at("reason"), "webhook_limit");
  ASSERT_OK(w.create_webhook(make_webhook("wh_g", "globex", {"image.uploaded"}), 2));  // another tenant's own count
  auto listed = w.list_webhooks("acme-corp");
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].id, "wh_1");
  EXPECT_EQ((*listed)[0].events, (std::vector<std::string>{"processing.completed", "image.deleted"}));
  EXPECT_EQ((*listed)[0].secret, "sealed-wh_1");
  EXPECT_TRUE((*listed)[0].enabled);
  EXPECT_FALSE(w.get_webhook("globex", "wh_1").ok());  // never another tenant's
  auto e = w.get_webhook("acme-corp", "wh_1").value();
  e.enabled = false;
  e.disabled_reason = "the endpoint answered 410 Gone";
  e.previous_secret = "sealed-old";
  e.previous_secret_until = kT0 + 24h;
  e.url = "https://hooks.example.com/moved";
  ASSERT_OK(w.update_webhook(e));
  auto again = w.get_webhook("acme-corp", "wh_1").value();
  EXPECT_FALSE(again.enabled);
  EXPECT_EQ(again.disabled_reason, "the endpoint answered 410 Gone");
  EXPECT_EQ(again.previous_secret, "sealed-old");
  EXPECT_EQ(again.previous_secret_until, kT0 + 24h);
  EXPECT_EQ(again.url, "https://hooks.example.com/moved");
  EXPECT_EQ(w.delete_webhook("globex", "wh_1").error().code, ErrorCode::kNotFound);
  ASSERT_OK(w.delete_webhook("acme-corp", "wh_1"));
  EXPECT_EQ(w.get_webhook("acme-corp", "wh_1").error().code, ErrorCode::kNotFound);
}

TEST_P(StoreConformanceTest, DeliveriesAreQueuedInTheCausingTransactionForSubscribedEnabledEndpointsOnly) {
  auto& w = store().webhooks();
  ASSERT_OK(w.create_webhook(make_webhook("wh_done", "acme-corp", {"processing.completed"}), 0));
  ASSERT_OK(w.create_webhook(make_webhook("wh_up", "acme-corp", {"image.uploaded", "image.deleted"}), 0));
  auto off = make_webhook("wh_off", "acme-corp", {"processing.completed"});
  off.enabled = false;
  ASSERT_OK(w.create_webhook(off, 0));
  ASSERT_OK(w.create_webhook(make_webhook("wh_other", "globex", {"processing.completed", "image.uploaded"}), 0));
  create(make_image("img_a"));  // image.uploaded, eventId = correlation id
  const WebhookEvent done{"acme-corp", "processing.completed", "evt_done_a", R"({"eventType":"processing.completed"})"};
  ASSERT_OK(store().transact([&](MetadataTx& tx) { return tx.queue_webhook(done); }));
  ASSERT_OK(store().transact([&](MetadataTx& tx) { return tx.queue_webhook(done); }));  // redelivered: no second row
  // A transaction that fails queues nothing.
  EXPECT_FALSE(store().transact([&](MetadataTx& tx) -> Status {
    if (auto st = tx.queue_webhook({"acme-corp", "processing.completed", "evt_rolled_back", "{}"}); !st) return st;
    return Error(ErrorCode::kInternal, "rolled back");
  }).ok());
  const WebhookEvent deleted{"acme-corp", "image.deleted", "evt_del_a", R"({"eventType":"image.deleted"})"};
  ASSERT_OK(store().delete_image("acme-corp", "img_a", &deleted));

  auto done_page = w.list_deliveries("acme-corp", "wh_done", std::nullopt, 10, "").value();
  ASSERT_EQ(done_page.deliveries.size(), 1u);
  const auto& d = done_page.deliveries[0];
  EXPECT_TRUE(d.id.starts_with("msg_")) << d.id;
  EXPECT_EQ(d.id.size(), 36u);
  EXPECT_EQ(d.event_id, "evt_done_a");
  EXPECT_EQ(d.payload, done.payload);
  EXPECT_EQ(d.status, DeliveryStatus::kPending);
  EXPECT_EQ(d.next_attempt_at, kT0);
  auto up_page = w.list_deliveries("acme-corp", "wh_up", std::nullopt, 10, "").value();
  ASSERT_EQ(up_page.deliveries.size(), 2u);
  std::set<std::string> types;
  for (const auto& x : up_page.deliveries) types.insert(x.event_type);
  EXPECT_EQ(types, (std::set<std::string>{"image.uploaded", "image.deleted"}));
  for (const auto& x : up_page.deliveries) {
    if (x.event_type == "image.uploaded") {
      EXPECT_EQ(x.event_id, "evt_img_a");
    }
  }
  EXPECT_TRUE(w.list_deliveries("acme-corp", "wh_off", std::nullopt, 10, "")->deliveries.empty());
  EXPECT_TRUE(w.list_deliveries("globex", "wh_other", std::nullopt, 10, "")->deliveries.empty());
  EXPECT_TRUE(w.list_deliveries("globex", "wh_done", std::nullopt, 10, "")->deliveries.empty());  // not theirs
}

TEST_P(StoreConformanceTest, ClaimsLeaseDueDeliveriesRespectThePerEndpointLimitAndRecordAttempts) {
  auto& w = store().webhooks();
  ASSERT_OK(w.create_webhook(make_webhook("wh_a", "acme-corp", {"processing.completed"}), 0));
  ASSERT_OK(w.create_webhook(make_webhook("wh_b", "acme-corp", {"processing.completed"}), 0));
  for (int i = 0; i < 5; ++i)
    ASSERT_OK(store().transact([&](MetadataTx& tx) {
      return tx.queue_webhook({"acme-corp", "processing.completed", "evt_" + std::to_string(i), "{}"});
    }));
  EXPECT_EQ(w.next_delivery_due().value(), kT0);
  auto first = w.claim_deliveries("one", kT0, 60s, 10, 2).value();
  ASSERT_EQ(first.size(), 4u);  // 2 per endpoint
  std::map<std::string, int> per;
  for (const auto& c : first) per[c.endpoint.id]++;
  EXPECT_EQ(per, (std::map<std::string, int>{{"wh_a", 2}, {"wh_b", 2}}));
  EXPECT_EQ(first[0].endpoint.secret, "sealed-" + first[0].endpoint.id);
  // Another sender sees the leases: the endpoints are at their limit.
  EXPECT_TRUE(w.claim_deliveries("two", kT0, 60s, 10, 2)->empty());
  EXPECT_EQ(w.claim_deliveries("two", kT0, 60s, 10, 0)->size(), 6u);  // no per-endpoint limit: the rest
  // Outcomes: success, a retry later, a final failure that disables the endpoint.
  AttemptOutcome ok;
  ok.attempt = {kT0 + 1s, 204, 12, ""};
  ok.status = DeliveryStatus::kSucceeded;
  ASSERT_OK(w.record_attempt(first[0].delivery.id, ok));
  AttemptOutcome retry;
  retry.attempt = {kT0 + 1s, 500, 30, "the endpoint answered HTTP 500"};
  retry.status = DeliveryStatus::kPending;
  retry.next_attempt_at = kT0 + 5s;
  const auto& retried = first[1].delivery;
  ASSERT_OK(w.record_attempt(retried.id, retry));
  auto got = w.get_delivery("acme-corp", retried.endpoint_id, retried.id).value();
  EXPECT_EQ(got.status, DeliveryStatus::kPending);
  EXPECT_EQ(got.attempt_count, 1);
  ASSERT_EQ(got.attempts.size(), 1u);
  EXPECT_EQ(got.attempts[0].http_status, 500);
  EXPECT_EQ(got.attempts[0].error, "the endpoint answered HTTP 500");
  EXPECT_EQ(got.next_attempt_at, kT0 + 5s);
  EXPECT_EQ(w.get_webhook("acme-corp", retried.endpoint_id)->failing_since, kT0 + 1s);
  // Not due before its time, even with the lease released; due after.
  const auto early = w.claim_deliveries("three", kT0 + 2s, 60s, 10, 0).value();
  for (const auto& c : early) EXPECT_NE(c.delivery.id, retried.id);
  bool seen = false;
  const auto later = w.claim_deliveries("three", kT0 + 61s, 60s, 10, 0).value();
  for (const auto& c : later) seen = seen || c.delivery.id == retried.id;
  EXPECT_TRUE(seen);
  AttemptOutcome gone;
  gone.attempt = {kT0 + 62s, 410, 3, "the endpoint answered HTTP 410"};
  gone.status = DeliveryStatus::kFailed;
  gone.disable_endpoint = "the endpoint answered 410 Gone";
  ASSERT_OK(w.record_attempt(retried.id, gone));
  auto endpoint = w.get_webhook("acme-corp", retried.endpoint_id).value();
  EXPECT_FALSE(endpoint.enabled);
  EXPECT_EQ(endpoint.disabled_reason, "the endpoint answered 410 Gone");
  // A disabled endpoint's deliveries are not claimed; success elsewhere clears failing_since.
  const auto after_disable = w.claim_deliveries("four", kT0 + 200s, 60s, 10, 0).value();
  for (const auto& c : after_disable) EXPECT_NE(c.endpoint.id, retried.endpoint_id);
  auto failed = w.list_deliveries("acme-corp", retried.endpoint_id, DeliveryStatus::kFailed, 10, "").value();
  ASSERT_EQ(failed.deliveries.size(), 1u);
  EXPECT_EQ(failed.deliveries[0].attempt_count, 2);
  // Redeliver: pending again with the same id, due now.
  ASSERT_OK(w.redeliver("acme-corp", retried.endpoint_id, retried.id, kT0 + 300s));
  got = w.get_delivery("acme-corp", retried.endpoint_id, retried.id).value();
  EXPECT_EQ(got.status, DeliveryStatus::kPending);
  EXPECT_EQ(got.next_attempt_at, kT0 + 300s);
  EXPECT_EQ(w.redeliver("globex", retried.endpoint_id, retried.id, kT0).error().code, ErrorCode::kNotFound);
  const auto pending = w.pending_deliveries().value();
  int64_t total = 0;
  for (const auto& [endpoint_id, n] : pending) total += n;
  EXPECT_EQ(total, 9);  // 10 queued, 1 succeeded
}

TEST_P(StoreConformanceTest, DeliveryListingsPageNewestFirstAndFilterByStatus) {
  auto& w = store().webhooks();
  ASSERT_OK(w.create_webhook(make_webhook("wh_a", "acme-corp", {"processing.completed"}), 0));
  for (int i = 0; i < 7; ++i) {
    clock_.set(kT0 + std::chrono::seconds(i));
    ASSERT_OK(store().transact([&](MetadataTx& tx) {
      return tx.queue_webhook({"acme-corp", "processing.completed", "evt_" + std::to_string(i), "{}"});
    }));
  }
  std::vector<std::string> events;
  std::string cursor;
  int pages = 0;
  do {
    auto page = w.list_deliveries("acme-corp", "wh_a", std::nullopt, 3, cursor).value();
    for (const auto& d : page.deliveries) events.push_back(d.event_id);
    cursor = page.next_cursor;
    ++pages;
  } while (!cursor.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(events, (std::vector<std::string>{"evt_6", "evt_5", "evt_4", "evt_3", "evt_2", "evt_1", "evt_0"}));
  EXPECT_TRUE(w.list_deliveries("acme-corp", "wh_a", DeliveryStatus::kSucceeded, 10, "")->deliveries.empty());
  EXPECT_EQ(w.list_deliveries("acme-corp", "wh_a", std::nullopt, 3, "garbage").error().code,
            ErrorCode::kInvalidArgument);
}

TEST_P(StoreConformanceTest, TrimmingTheDeliveryLogRemovesOnlyOldFinishedDeliveries) {
  auto& w = store().webhooks();
  ASSERT_OK(w.create_webhook(make_webhook("wh_a", "acme-corp", {"processing.completed"}), 0));
  for (int i = 0; i < 3; ++i)
    ASSERT_OK(store().transact([&](MetadataTx& tx) {
      return tx.queue_webhook({"acme-corp", "processing.completed", "evt_" + std::to_string(i), "{}"});
    }));
  const auto claimed = w.claim_deliveries("one", kT0, 60s, 10, 0).value();
  ASSERT_EQ(claimed.size(), 3u);
  AttemptOutcome ok;
  ok.attempt = {kT0 + 1s, 204, 3, ""};
  ok.status = DeliveryStatus::kSucceeded;
  ASSERT_OK(w.record_attempt(claimed[0].delivery.id, ok));
  AttemptOutcome failed;
  failed.attempt = {kT0 + 2s, 500, 3, "HTTP 500"};
  failed.status = DeliveryStatus::kFailed;
  ASSERT_OK(w.record_attempt(claimed[1].delivery.id, failed));
  EXPECT_EQ(w.trim_deliveries(kT0 + 1s).value(), 0);  // nothing finished before then
  EXPECT_EQ(w.trim_deliveries(kT0 + 1h).value(), 2);  // the pending one stays, however old
  auto left = w.list_deliveries("acme-corp", "wh_a", std::nullopt, 10, "").value();
  ASSERT_EQ(left.deliveries.size(), 1u);
  EXPECT_EQ(left.deliveries[0].id, claimed[2].delivery.id);
}

TEST_P(StoreConformanceTest, DeletingAnEndpointDeletesItsDeliveries) {
  auto& w = store().webhooks();
  ASSERT_OK(w.create_webhook(make_webhook("wh_a", "acme-corp", {"processing.completed"}), 0));
  ASSERT_OK(store().transact([&](MetadataTx& tx) {
    return tx.queue_webhook({"acme-corp", "processing.completed", "evt_1", "{}"});
  }));
  ASSERT_OK(w.delete_webhook("acme-corp", "wh_a"));
  EXPECT_TRUE(w.pending_deliveries()->empty());
  EXPECT_FALSE(w.next_delivery_due()->has_value());
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreConformanceTest, ::testing::Values("sqlite", "postgresql"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// ------------------------------------------------------------------------------------------------
// PostgreSQL only

class PostgresStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PostgresOptions options;
    options.pool_size = 8;
    options.connect_timeout_s = 2;
    harness_ = std::make_unique<PostgresHarness>(clock_, options);
  }
  MetadataStore& store() { return harness_->store(); }

  SystemClock clock_;
  std::unique_ptr<PostgresHarness> harness_;
};

TEST_F(PostgresStoreTest, ConcurrentReadModifyWriteOfTheSameImagesLosesNoUpdate) {
  constexpr int kThreads = 8;
  constexpr int kUpdates = 200;
  for (const char* id : {"img_a", "img_b"})
    ASSERT_OK(store().create_image(make_image(id), true, event_for));

  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kUpdates; ++i) {
        const std::string image = (i + t) % 2 ? "img_a" : "img_b";
        // A counter kept in a step's attempts: read, add one, write back — the pattern the stages
        // use. Plus a per-thread step on the same image, written concurrently.
        Status st = store().transact([&](MetadataTx& tx) -> Status {
          auto steps = tx.get_steps(image);
          if (!steps) return std::move(steps).error();
          StepRecord counter = make_step(image, "counter", "feature_extraction");
          for (const auto& s : *steps)
            if (s.model == "counter") counter = s;
          ++counter.attempts;
          if (auto s = tx.upsert_step(counter); !s) return s;
          StepRecord mine = make_step(image, "thread-" + std::to_string(t), "vector_indexing");
          mine.attempts = i + 1;
          return tx.upsert_step(mine);
        });
        if (!st) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);

  int total = 0;
  for (const char* id : {"img_a", "img_b"}) {
    auto steps = store().get_steps(id);
    ASSERT_OK(steps);
    ASSERT_EQ(steps->size(), 1u + kThreads);
    for (const auto& s : *steps) {
      if (s.model == "counter") {
        EXPECT_EQ(s.attempts, kThreads * kUpdates / 2) << id;
        total += s.attempts;
      }
    }
  }
  EXPECT_EQ(total, kThreads * kUpdates);
  // Each thread's last write on each image is its last iteration touching that image.
  auto steps = store().get_steps("img_a");
  for (const auto& s : *steps) {
    if (s.model.starts_with("thread-")) {
      EXPECT_GE(s.attempts, kUpdates - 1) << s.model;
    }
  }
}

TEST_F(PostgresStoreTest, ConcurrentDeliveriesOfOneEventTakeEffectOnce) {
  ASSERT_OK(store().create_image(make_image("img_e"), true, event_for));
  constexpr int kThreads = 8;
  std::atomic<int> effects{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int e = 0; e < 20; ++e) {
        const std::string event_id = "evt_" + std::to_string(e);
        bool applied = false;
        Status st = store().transact([&](MetadataTx& tx) -> Status {
          applied = false;
          auto seen = tx.is_processed("extractor", event_id);
          if (!seen) return std::move(seen).error();
          if (*seen) return {};
          if (auto s = tx.mark_processed("extractor", event_id); !s) return s;
          applied = true;
          return tx.enqueue(message("img_e", event_id));
        });
        if (!st) ++failures;
        else if (applied) ++effects;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(effects.load(), 20);
  EXPECT_EQ(*store().outbox_backlog(), 1 + 20);
}

TEST_F(PostgresStoreTest, ConcurrentUploadsWithOneIdempotencyKeyCreateOneImage) {
  constexpr int kThreads = 8;
  std::vector<CreateImageOutcome::Kind> kinds(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto out = store().create_image(make_image("img_" + std::to_string(t), "acme-corp", "same-bytes", kT0, "key-1"),
                                      false, event_for);
      if (!out) ++failures;
      else kinds[static_cast<size_t>(t)] = out->kind;
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), CreateImageOutcome::Kind::kCreated), 1);
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), CreateImageOutcome::Kind::kIdempotentReplay), kThreads - 1);
  EXPECT_EQ(*store().outbox_backlog(), 1);
}

TEST_F(PostgresStoreTest, ConcurrentUploadsNeverCrossTheImageQuota) {
  TenantLimits limits;
  limits.max_images = 5;
  ASSERT_OK(store().create_tenant(make_tenant("acme-corp", kT0, limits)));
  constexpr int kThreads = 8;
  constexpr int kPerThread = 3;
  const StorageQuota quota{5, 0};
  std::atomic<int> created{0};
  std::atomic<int> refused{0};
  std::mutex mu;
  std::vector<std::string> other_errors;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string id = "img_" + std::to_string(t) + "_" + std::to_string(i);
        auto out = store().create_image(make_image(id), false, event_for, quota);
        if (out && out->kind == CreateImageOutcome::Kind::kCreated) {
          ++created;
        } else if (!out && out.error().code == ErrorCode::kResourceExhausted &&
                   out.error().context.at("reason") == "quota_images") {
          ++refused;
        } else {
          std::lock_guard lock(mu);
          other_errors.push_back(out ? "not created" : out.error().to_string());
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_TRUE(other_errors.empty()) << other_errors.front();
  EXPECT_EQ(created.load(), 5);
  EXPECT_EQ(refused.load(), kThreads * kPerThread - 5);
  auto acme = store().get_tenant("acme-corp");
  ASSERT_OK(acme);
  EXPECT_EQ(acme->image_count, 5);
  EXPECT_EQ(acme->bytes_stored, 5 * 204800);
  auto page = store().list_images("acme-corp", std::nullopt, 100, "");
  ASSERT_OK(page);
  EXPECT_EQ(page->images.size(), 5u);
  EXPECT_EQ(*store().outbox_backlog(), 5);
}

TEST_F(PostgresStoreTest, StoresOnOneDatabaseShareARateBucket) {
  auto other = PostgresMetadataStore::open(harness_->url(), clock_, {});
  ASSERT_OK(other);
  const Timestamp t = kT0;
  // The first process takes the whole burst ...
  for (int i = 0; i < 3; ++i) {
    auto wait = store().take_rate_token("upload:acme-corp", 1.0, 3.0, t);
    ASSERT_OK(wait);
    EXPECT_EQ(*wait, 0.0) << i;
  }
  // ... so the second one is refused until the bucket refills, then gets exactly one token.
  auto refused = (*other)->take_rate_token("upload:acme-corp", 1.0, 3.0, t + 200ms);
  ASSERT_OK(refused);
  EXPECT_NEAR(*refused, 0.8, 1e-9);
  auto refilled = (*other)->take_rate_token("upload:acme-corp", 1.0, 3.0, t + 1s);
  ASSERT_OK(refilled);
  EXPECT_EQ(*refilled, 0.0);
  auto first_again = store().take_rate_token("upload:acme-corp", 1.0, 3.0, t + 1s);
  ASSERT_OK(first_again);
  EXPECT_NEAR(*first_again, 1.0, 1e-9);
}

TEST_F(PostgresStoreTest, ConcurrentTakersNeverGetMoreThanTheBurst) {
  auto other = PostgresMetadataStore::open(harness_->url(), clock_, {});
  ASSERT_OK(other);
  constexpr int kThreads = 8;
  constexpr int kTakes = 5;
  std::atomic<int> taken{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      MetadataStore& s = t % 2 ? store() : static_cast<MetadataStore&>(**other);
      for (int i = 0; i < kTakes; ++i) {
        auto wait = s.take_rate_token("search:acme-corp", 0.001, 10.0, kT0);  // no refill to speak of
        if (!wait) ++failures;
        else if (*wait == 0.0) ++taken;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(taken.load(), 10);
}

TEST_F(PostgresStoreTest, ConcurrentRelaysPublishEveryOutboxRowOnce) {
  constexpr int kRows = 300;
  ASSERT_OK(store().transact([](MetadataTx& tx) -> Status {
    for (int i = 0; i < kRows; ++i)
      if (auto s = tx.enqueue(message("img_" + std::to_string(i % 7), std::to_string(i))); !s) return s;
    return {};
  }));
  std::mutex mu;
  std::multiset<std::string> published;
  std::atomic<int> failures{0};
  std::vector<int64_t> order;  // seqs in the order the relays published them
  std::vector<std::thread> relays;
  for (int t = 0; t < 4; ++t) {
    relays.emplace_back([&, t] {
      const std::string relay = "relay-" + std::to_string(t);
      while (true) {
        auto batch = store().pending_outbox(relay, 16, 30s);
        if (!batch) {
          ++failures;
          return;
        }
        if (batch->empty()) {
          auto left = store().outbox_backlog();
          if (!left || *left == 0) return;
          std::this_thread::yield();  // another relay holds the head of the outbox
          continue;
        }
        std::vector<int64_t> seqs;
        {
          std::lock_guard lock(mu);
          for (const auto& r : *batch) {
            published.insert(r.message.payload);
            seqs.push_back(r.seq);
            order.push_back(r.seq);
          }
        }
        if (!store().mark_outbox_sent(seqs)) ++failures;
      }
    });
  }
  for (auto& r : relays) r.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end())) << "a relay published past another's rows";
  EXPECT_EQ(published.size(), static_cast<size_t>(kRows));
  for (int i = 0; i < kRows; ++i) EXPECT_EQ(published.count(std::to_string(i)), 1u) << i;
  EXPECT_EQ(*store().outbox_backlog(), 0);
}

TEST_F(PostgresStoreTest, DeadLettersKeepUndecodableBytes) {
  const std::string raw("\x00\xff\xfe{not utf-8\x80", 14);
  ASSERT_OK(store().transact([&](MetadataTx& tx) {
    DeadLetter d;
    d.topic = "deeplens.images.uploaded";
    d.key = std::string("\xc3\x28", 2);
    d.payload = raw;
    d.stage = "orchestration";
    d.error_code = "POISON";
    d.error_message = "undecodable";
    return tx.add_dead_letter(d);
  }));
  auto letters = store().list_dead_letters(false, 10);
  ASSERT_OK(letters);
  ASSERT_EQ(letters->size(), 1u);
  EXPECT_EQ((*letters)[0].payload, raw);
  EXPECT_EQ((*letters)[0].key, std::string("\xc3\x28", 2));
}

TEST_F(PostgresStoreTest, UnreachableServerIsUnavailableWithAClearMessage) {
  auto store = PostgresMetadataStore::open("postgresql://postgres@127.0.0.1:1/nothing", clock_, {});
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(store.error().message.find("PostgreSQL is unavailable"), std::string::npos) << store.error().message;
  EXPECT_NE(store.error().message.find("Connection refused"), std::string::npos) << store.error().message;
}

TEST_F(PostgresStoreTest, MigrationsAreRecordedAndReopeningIsANoOp) {
  auto again = PostgresMetadataStore::open(harness_->url(), clock_, {});
  ASSERT_OK(again);
  pqxx::connection c(harness_->url());
  pqxx::nontransaction n(c);
  auto r = n.exec("SELECT component, version FROM schema_migrations ORDER BY version");
  ASSERT_EQ(r.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(r[i][0].as<std::string>(), "metadata");
    EXPECT_EQ(r[i][1].as<int>(), i + 1);
  }
}

// A database written before migration 3 (the tables it changes, as version 2 left them): usage is
// backfilled from the stored images and every key gets its public id.
TEST_F(PostgresStoreTest, MigrationThreeBackfillsUsageAndKeyIds) {
  const std::string url = postgres_server().create_database();
  {
    pqxx::connection c(url);
    pqxx::work w(c);
    w.exec(R"sql(
CREATE TABLE schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL, applied_at BIGINT NOT NULL,
                                PRIMARY KEY (component, version));
INSERT INTO schema_migrations VALUES ('metadata', 1, 0), ('metadata', 2, 0);
CREATE TABLE tenants (id TEXT COLLATE "C" PRIMARY KEY, created_at BIGINT NOT NULL);
CREATE TABLE api_keys (key_sha256 TEXT COLLATE "C" PRIMARY KEY,
                       tenant_id TEXT COLLATE "C" NOT NULL REFERENCES tenants(id), created_at BIGINT NOT NULL);
CREATE TABLE images (image_id TEXT COLLATE "C" PRIMARY KEY, tenant_id TEXT COLLATE "C" NOT NULL,
                     file_size BIGINT NOT NULL, status TEXT COLLATE "C" NOT NULL DEFAULT 'completed',
                     created_at BIGINT NOT NULL DEFAULT 0);
CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, claimed_until BIGINT);
CREATE TABLE steps (step TEXT COLLATE "C" NOT NULL, status TEXT COLLATE "C" NOT NULL);  -- indexed by migration 7
INSERT INTO tenants VALUES ('acme-corp', 1), ('globex', 2);
INSERT INTO api_keys VALUES ('0123456789abcdef0123456789abcdef', 'acme-corp', 3);
INSERT INTO images VALUES ('img_1', 'acme-corp', 100), ('img_2', 'acme-corp', 250), ('img_3', 'initech', 7);
)sql");
    w.commit();
  }
  auto migrated = PostgresMetadataStore::open(url, clock_, {});
  ASSERT_OK(migrated);
  auto acme = (*migrated)->get_tenant("acme-corp");
  ASSERT_OK(acme);
  EXPECT_EQ(acme->image_count, 2);
  EXPECT_EQ(acme->bytes_stored, 350);
  EXPECT_FALSE(acme->limits.max_images.has_value());
  auto globex = (*migrated)->get_tenant("globex");
  ASSERT_OK(globex);
  EXPECT_EQ(globex->image_count, 0);
  EXPECT_EQ(globex->bytes_stored, 0);
  auto key = (*migrated)->find_api_key("0123456789abcdef0123456789abcdef");
  ASSERT_OK(key);
  EXPECT_EQ(key->id, "key_0123456789abcdef");
  EXPECT_EQ(key->tenant_id, "acme-corp");
  EXPECT_EQ(key->name, "");
  EXPECT_EQ(key->prefix, "");
  EXPECT_EQ(key->created_at, Timestamp(3ms));
  EXPECT_TRUE(key->usable(kT0));
  ASSERT_OK((*migrated)->revoke_api_key("acme-corp", "key_0123456789abcdef", kT0));
  EXPECT_FALSE((*migrated)->find_api_key("0123456789abcdef0123456789abcdef")->usable(kT0));
}

// The acceptance scenario of issue 7: PostgreSQL restarted mid-run. While it is down every call
// answers kUnavailable with a readable message; afterwards the same store object works again by
// itself, and every upload it acknowledged is there, each with its event.
TEST_F(PostgresStoreTest, SurvivesAServerRestartWithoutLosingAcknowledgedWrites) {
  std::mutex mu;
  std::vector<std::string> acknowledged;
  std::vector<Error> errors;
  std::atomic<bool> stop{false};
  std::atomic<int> ok_count{0};
  std::atomic<int> error_count{0};
  std::thread writer([&] {
    for (int i = 0; !stop; ++i) {
      const std::string id = "img_" + std::to_string(i);
      auto out = store().create_image(make_image(id, "acme-corp", "", clock_.now()), true, event_for);
      {
        std::lock_guard lock(mu);
        if (out) acknowledged.push_back(id);
        else errors.push_back(out.error());
      }
      if (out) {
        ++ok_count;
      } else {
        ++error_count;
        std::this_thread::sleep_for(5ms);  // a client backing off, not synchronisation
      }
    }
  });
  auto wait_for = [](const std::function<bool()>& cond, std::chrono::milliseconds deadline) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (!cond()) {
      if (std::chrono::steady_clock::now() > end) return false;
      std::this_thread::sleep_for(10ms);
    }
    return true;
  };

  ASSERT_TRUE(wait_for([&] { return ok_count >= 50; }, 30s));
  postgres_server().stop();
  const int ok_at_stop = ok_count;

  auto ping = store().ping();
  ASSERT_FALSE(ping.ok());
  EXPECT_EQ(ping.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(ping.error().message.find("PostgreSQL is unavailable"), std::string::npos) << ping.error().message;
  auto read = store().get_image("acme-corp", "img_0");
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.error().code, ErrorCode::kUnavailable);
  ASSERT_TRUE(wait_for([&] { return error_count >= 20; }, 30s));

  postgres_server().start();
  ASSERT_TRUE(wait_for([&] { return store().ping().ok(); }, 30s));
  ASSERT_TRUE(wait_for([&] { return ok_count >= ok_at_stop + 50; }, 30s));
  stop = true;
  writer.join();

  for (const auto& e : errors) {
    EXPECT_EQ(e.code, ErrorCode::kUnavailable) << e.to_string();
    EXPECT_NE(e.message.find("PostgreSQL"), std::string::npos) << e.to_string();
  }
  // Every acknowledged image is there; every stored image has exactly its one event.
  std::set<std::string> stored;
  std::string cursor;
  do {
    auto page = store().list_images("acme-corp", std::nullopt, 500, cursor);
    ASSERT_OK(page);
    for (const auto& i : page->images) stored.insert(i.image_id);
    cursor = page->next_cursor;
  } while (!cursor.empty());
  for (const auto& id : acknowledged) EXPECT_TRUE(stored.contains(id)) << id << " was acknowledged but is gone";
  auto pending = store().pending_outbox("relay", 100000, 30s);
  ASSERT_OK(pending);
  std::multiset<std::string> event_keys;
  for (const auto& r : *pending) event_keys.insert(r.message.key);
  EXPECT_EQ(event_keys.size(), stored.size());
  for (const auto& id : stored) EXPECT_EQ(event_keys.count(id), 1u) << id;
}

}  // namespace
}  // namespace deeplens
