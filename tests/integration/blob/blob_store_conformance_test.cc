// One BlobStore contract, checked against every backend: local files and Azure Blob Storage (a
// real Azurite). The Azure store is configured with small thresholds so that both Put Blob and the
// block upload (Put Block + Put Block List) are exercised.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <thread>

#include "blob/azure/azure_blob_store.h"
#include "blob/local/local_blob_store.h"
#include "support/azurite_server.h"

namespace deeplens {
namespace {

namespace fs = std::filesystem;
using testing::AzuriteServer;

std::vector<uint8_t> bytes_of(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * 131 + seed * 7 + (i >> 9)) & 0xff);
  return v;
}

std::string str(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }

struct Backend {
  std::string name;
  std::function<std::unique_ptr<BlobStore>(const fs::path& dir, RandomSource& random)> make;
};

// So that ctest shows "GetParam() = azure" rather than the struct's bytes.
void PrintTo(const Backend& b, std::ostream* os) { *os << b.name; }

AzuriteServer& azurite() {
  static const auto server = std::make_unique<AzuriteServer>();  // one per test binary, stopped at exit
  return *server;
}

std::unique_ptr<BlobStore> make_azure(const fs::path& dir, RandomSource& random, int64_t single_put_max = 64 << 10) {
  AzureBlobOptions o;
  o.account = azure::parse_connection_string(azurite().connection_string()).value();
  o.spool_dir = dir / "spool";
  o.single_put_max = single_put_max;
  o.block_size = 16 << 10;
  auto store = AzureBlobStore::open(o, random);
  EXPECT_TRUE(store.ok()) << store.error().to_string();
  return std::move(store).value();
}

class BlobStoreConformance : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("deeplens-blob-" + std::to_string(::getpid()) + "-" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    store_ = GetParam().make(dir_, random_);
    // Each test gets its own tenants: Azurite's state is shared by the whole binary.
    tenant_ = "t" + std::to_string(counter_++) + "-" + std::to_string(::getpid());
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  std::string key(const std::string& name, const std::string& kind = "images") const {
    return "tenant-" + tenant_ + "/" + kind + "/2026/12/02/" + name;
  }
  Status write(const std::string& k, const std::vector<uint8_t>& data, size_t chunk = 7000) {
    auto w = store_->begin_write();
    if (!w) return std::move(w).error();
    for (size_t off = 0; off < data.size(); off += chunk)
      if (auto st = (*w)->write(std::span(data).subspan(off, std::min(chunk, data.size() - off))); !st) return st;
    EXPECT_EQ((*w)->size(), static_cast<int64_t>(data.size()));
    EXPECT_EQ(fs::file_size((*w)->temp_path()), data.size());  // what a probe reads before commit
    return (*w)->commit(k);
  }

  static inline int counter_ = 0;
  fs::path dir_;
  SeededRandom random_{42};
  std::unique_ptr<BlobStore> store_;
  std::string tenant_;
};

TEST_P(BlobStoreConformance, CommittedWritesReadBackExactly) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{5000}, size_t{64 << 10}, size_t{200 << 10} + 17}) {
    const auto data = bytes_of(size, static_cast<uint8_t>(size));
    const std::string k = key("img_" + std::to_string(size) + ".jpg");
    ASSERT_TRUE(write(k, data).ok()) << size;
    EXPECT_TRUE(store_->exists(k));
    auto got = store_->read(k);
    ASSERT_TRUE(got.ok()) << got.error().to_string();
    EXPECT_EQ(got->size(), size);
    EXPECT_TRUE(*got == str(data)) << "content differs at size " << size;
  }
}

TEST_P(BlobStoreConformance, AWriterDroppedWithoutCommitLeavesNothing) {
  {
    auto w = store_->begin_write();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->write(bytes_of(300 << 10, 1)).ok());
    EXPECT_TRUE(fs::exists((*w)->temp_path()));
  }
  auto listed = store_->list("tenant-" + tenant_ + "/");
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty());
  for (const auto& e : fs::recursive_directory_iterator(dir_))
    EXPECT_FALSE(e.is_regular_file()) << "left behind: " << e.path();
}

TEST_P(BlobStoreConformance, PutOverwritesAndRemoveIsIdempotent) {
  const std::string k = key("img_1.jpg", "thumbnails");
  ASSERT_TRUE(store_->put(k, bytes_of(100, 1)).ok());
  ASSERT_TRUE(store_->put(k, bytes_of(50, 2)).ok());
  EXPECT_EQ(*store_->read(k), str(bytes_of(50, 2)));
  ASSERT_TRUE(store_->remove(k).ok());
  EXPECT_FALSE(store_->exists(k));
  EXPECT_TRUE(store_->remove(k).ok());  // absent is fine
  auto gone = store_->read(k);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, ErrorCode::kNotFound) << gone.error().to_string();
}

TEST_P(BlobStoreConformance, ReadingWhatWasNeverWrittenIsNotFound) {
  auto r = store_->read(key("never.jpg"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  auto other = store_->read("tenant-nobody-" + tenant_ + "/images/2026/01/01/x.jpg");  // no such container either
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code, ErrorCode::kNotFound) << other.error().to_string();
}

TEST_P(BlobStoreConformance, InvalidKeysAreRefused) {
  for (const std::string k : {"../etc/passwd", "/abs/path", "tenant-x/images/../../y", "tenant-x/images/a b.jpg"}) {
    auto st = store_->put(k, bytes_of(3, 0));
    ASSERT_FALSE(st.ok()) << k;
    EXPECT_EQ(st.error().code, ErrorCode::kInvalidArgument) << k;
  }
}

TEST_P(BlobStoreConformance, ListFindsCommittedBlobsByPrefixAcrossKinds) {
  const std::string other = tenant_ + "x";
  ASSERT_TRUE(write(key("a.jpg"), bytes_of(10, 1)).ok());
  ASSERT_TRUE(store_->put(key("a.jpg", "thumbnails"), bytes_of(10, 2)).ok());
  ASSERT_TRUE(store_->put("tenant-" + other + "/images/2026/12/02/b.png", bytes_of(10, 3)).ok());
  const auto before = std::chrono::system_clock::now() - std::chrono::minutes(5);

  auto mine = store_->list("tenant-" + tenant_ + "/");
  ASSERT_TRUE(mine.ok()) << mine.error().to_string();
  std::vector<std::string> keys;
  for (const auto& e : *mine) {
    keys.push_back(e.key);
    EXPECT_GT(e.modified, before) << e.key;
  }
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{key("a.jpg"), key("a.jpg", "thumbnails")}));

  auto images = store_->list("tenant-" + tenant_ + "/images/");
  ASSERT_TRUE(images.ok());
  ASSERT_EQ(images->size(), 1u);
  EXPECT_EQ((*images)[0].key, key("a.jpg"));

  auto all = store_->list("tenant-");  // what the orphan sweeper asks for
  ASSERT_TRUE(all.ok());
  size_t found = 0;
  for (const auto& e : *all) found += e.key == "tenant-" + other + "/images/2026/12/02/b.png" || e.key == key("a.jpg");
  EXPECT_EQ(found, 2u);
}

TEST_P(BlobStoreConformance, ConcurrentWritersAndReaders) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) {
        const auto data = bytes_of(static_cast<size_t>(1000 + t * 9000 + i * 4000), static_cast<uint8_t>(t * 10 + i));
        const std::string k = key("c" + std::to_string(t) + "_" + std::to_string(i) + ".jpg");
        auto w = store_->begin_write();
        if (!w || !(*w)->write(data).ok() || !(*w)->commit(k).ok()) {
          ++failures;
          continue;
        }
        auto got = store_->read(k);
        if (!got || *got != str(data)) ++failures;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_P(BlobStoreConformance, PingAndLocation) {
  EXPECT_TRUE(store_->ping().ok());
  const std::string k = key("img_9.jpg");
  const BlobLocation where = store_->location(k);
  if (GetParam().name == "azure") {
    EXPECT_EQ(where.type, "azure_blob");
    EXPECT_EQ(where.container, tenant_ + "-images");
    EXPECT_EQ(where.name, "2026/12/02/img_9.jpg");
    EXPECT_EQ(store_->file_path(k), azurite().endpoint() + "/" + tenant_ + "-images/2026/12/02/img_9.jpg");
  } else {
    EXPECT_EQ(where.type, "local");
    EXPECT_EQ(where.name, k);
    EXPECT_EQ(store_->file_path(k), where.container + "/" + k);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, BlobStoreConformance,
                         ::testing::Values(Backend{"local",
                                                   [](const fs::path& dir, RandomSource& random) -> std::unique_ptr<BlobStore> {
                                                     return LocalBlobStore::open(dir / "blobs", random).value();
                                                   }},
                                           Backend{"azure",
                                                   [](const fs::path& dir, RandomSource& random) {
                                                     return make_azure(dir, random);
                                                   }}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace deeplens
