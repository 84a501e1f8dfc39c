#include "vectors/hnsw/write_ahead_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "test_support.h"

namespace deeplens::hnsw {
namespace {

using deeplens::testing::TempDir;

std::vector<LogRecord> read_all(const std::string& path, size_t dim, SegmentScan* scan_out = nullptr) {
  std::vector<LogRecord> out;
  auto scan = scan_segment(path, dim, [&](LogRecord&& r) { out.push_back(std::move(r)); });
  EXPECT_TRUE(scan.ok()) << scan.error().to_string();
  if (scan.ok() && scan_out) *scan_out = *scan;
  return out;
}

TEST(WriteAheadLog, RecordsRoundTripInOrder) {
  TempDir dir;
  auto log = WriteAheadLog::open(dir.path(), 0, 0, true);
  ASSERT_TRUE(log.ok()) << log.error().to_string();
  std::string bytes;
  encode_upsert(bytes, "img_1", std::vector<float>{1, 2, 3});
  encode_remove(bytes, "img_0");
  auto lsn = (*log)->append(bytes);
  ASSERT_TRUE(lsn.ok());
  EXPECT_EQ(*lsn, bytes.size());
  ASSERT_TRUE((*log)->sync(*lsn).ok());

  SegmentScan scan;
  auto records = read_all(segment_path(dir.path(), 0), 3, &scan);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].op, LogOp::kUpsert);
  EXPECT_EQ(records[0].id, "img_1");
  EXPECT_EQ(records[0].vector, (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(records[1].op, LogOp::kRemove);
  EXPECT_EQ(records[1].id, "img_0");
  EXPECT_EQ(scan.valid_bytes, scan.file_bytes);
}

TEST(WriteAheadLog, ScanStopsAtATornOrCorruptTail) {
  TempDir dir;
  std::string bytes;
  encode_upsert(bytes, "a", std::vector<float>{1, 0});
  const size_t first = bytes.size();
  encode_upsert(bytes, "b", std::vector<float>{0, 1});
  const std::string path = segment_path(dir.path(), 0);

  for (size_t cut = first; cut < bytes.size(); ++cut) {  // every torn length of the 2nd record
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(cut));
    SegmentScan scan;
    auto records = read_all(path, 2, &scan);
    ASSERT_EQ(records.size(), 1u) << "cut at " << cut;
    EXPECT_EQ(scan.valid_bytes, first);
  }
  std::string flipped = bytes;
  flipped[bytes.size() - 1] ^= 0x40;  // a bit flip in the last float
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(flipped.data(), static_cast<std::streamsize>(flipped.size()));
  EXPECT_EQ(read_all(path, 2).size(), 1u);
  std::string zeros = bytes.substr(0, first) + std::string(4096, '\0');  // a zero-filled tail
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
  EXPECT_EQ(read_all(path, 2).size(), 1u);
}

TEST(WriteAheadLog, ReopenTruncatesTheTornTailAndAppendsAfterIt) {
  TempDir dir;
  std::string bytes;
  encode_upsert(bytes, "a", std::vector<float>{1, 0});
  const size_t first = bytes.size();
  encode_upsert(bytes, "b", std::vector<float>{0, 1});
  const std::string path = segment_path(dir.path(), 0);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 3));

  auto log = WriteAheadLog::open(dir.path(), 0, first, true);
  ASSERT_TRUE(log.ok());
  std::string more;
  encode_upsert(more, "c", std::vector<float>{1, 1});
  auto lsn = (*log)->append(more);
  ASSERT_TRUE(lsn.ok());
  ASSERT_TRUE((*log)->sync(*lsn).ok());
  auto records = read_all(path, 2);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].id, "a");
  EXPECT_EQ(records[1].id, "c");
}

TEST(WriteAheadLog, ScanRejectsARecordOfAnotherDimension) {
  TempDir dir;
  std::string bytes;
  encode_upsert(bytes, "a", std::vector<float>{1, 0, 0});
  const std::string path = segment_path(dir.path(), 0);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  auto scan = scan_segment(path, 2, [](LogRecord&&) {});
  ASSERT_FALSE(scan.ok());
  EXPECT_EQ(scan.error().code, ErrorCode::kInternal);
}

TEST(WriteAheadLog, ConcurrentWritersAreAllDurableAndShareSyncs) {
  TempDir dir;
  auto opened = WriteAheadLog::open(dir.path(), 0, 0, true);
  ASSERT_TRUE(opened.ok());
  WriteAheadLog& log = **opened;
  constexpr int kThreads = 4, kPerThread = 50;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string bytes;
        encode_upsert(bytes, "t" + std::to_string(t) + "_" + std::to_string(i), std::vector<float>{float(t), float(i)});
        auto lsn = log.append(bytes);
        if (!lsn.ok() || !log.sync(*lsn).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(read_all(segment_path(dir.path(), 0), 2).size(), size_t{kThreads * kPerThread});
}

TEST(WriteAheadLog, RotateStartsANewSegment) {
  TempDir dir;
  auto log = WriteAheadLog::open(dir.path(), 3, 0, true);
  ASSERT_TRUE(log.ok());
  std::string a, b;
  encode_remove(a, "a");
  encode_remove(b, "b");
  ASSERT_TRUE((*log)->append(a).ok());
  ASSERT_TRUE((*log)->rotate(4).ok());
  EXPECT_EQ((*log)->generation(), 4u);
  auto lsn = (*log)->append(b);
  ASSERT_TRUE(lsn.ok());
  ASSERT_TRUE((*log)->sync(*lsn).ok());
  EXPECT_EQ(read_all(segment_path(dir.path(), 3), 1).size(), 1u);
  EXPECT_EQ(read_all(segment_path(dir.path(), 4), 1).at(0).id, "b");
  EXPECT_EQ(parse_segment_name("wal-00000000000000000004.log"), 4u);
  EXPECT_EQ(parse_segment_name("wal-4.log"), std::nullopt);
}

}  // namespace
}  // namespace deeplens::hnsw
