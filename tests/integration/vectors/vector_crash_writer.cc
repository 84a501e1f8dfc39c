// vector_crash_writer ROOT FIRST COUNT: upserts ids FIRST..FIRST+COUNT-1 into the crash-test
// collection from several writer threads (single upserts sharing fsyncs, plus batches) while
// the store's checkpointer snapshots every few hundred KiB of log, and prints "ok <n>" on stdout
// as soon as each upsert is acknowledged. The crash test SIGKILLs it at an arbitrary moment.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "common/log.h"
#include "crash_vectors.h"
#include "vectors/hnsw/hnsw_store.h"

namespace {

void report(uint64_t n) {
  const std::string line = "ok " + std::to_string(n) + "\n";
  // One write() of less than PIPE_BUF bytes: the line arrives whole or not at all.
  if (::write(STDOUT_FILENO, line.data(), line.size()) != static_cast<ssize_t>(line.size())) std::_Exit(3);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace deeplens;
  if (argc != 4) {
    std::fprintf(stderr, "usage: vector_crash_writer ROOT FIRST COUNT\n");
    return 2;
  }
  init_logging(LogOptions{LogLevel::kWarn, true});
  const std::string root = argv[1];
  const uint64_t first = std::strtoull(argv[2], nullptr, 10);
  const uint64_t count = std::strtoull(argv[3], nullptr, 10);

  HnswOptions options;
  options.checkpoint_log_bytes = 256 << 10;
  options.checkpoint_poll_interval = std::chrono::milliseconds(2);
  options.exact_search_below = 0;
  auto store = HnswVectorStore::open(root, options);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.error().to_string().c_str());
    return 1;
  }
  (*store)->start();
  auto index = (*store)->open_collection(crash_test::kCollection, crash_test::kDimension);
  if (!index.ok()) {
    std::fprintf(stderr, "%s\n", index.error().to_string().c_str());
    return 1;
  }
  VectorIndex* collection = *index;

  constexpr uint64_t kBatch = 8;
  std::atomic<uint64_t> next{first};
  const uint64_t end = first + count;
  auto single_writer = [&] {
    for (uint64_t n = next.fetch_add(1); n < end; n = next.fetch_add(1)) {
      if (Status s = collection->upsert(crash_test::id_for(n), crash_test::vector_for(n)); !s.ok()) {
        std::fprintf(stderr, "%s\n", s.error().to_string().c_str());
        std::_Exit(1);
      }
      report(n);
    }
  };
  auto batch_writer = [&] {
    for (uint64_t n = next.fetch_add(kBatch); n < end; n = next.fetch_add(kBatch)) {
      const uint64_t last = std::min(end, n + kBatch);
      std::vector<std::string> ids;
      std::vector<std::vector<float>> vectors;
      for (uint64_t i = n; i < last; ++i) {
        ids.push_back(crash_test::id_for(i));
        vectors.push_back(crash_test::vector_for(i));
      }
      std::vector<VectorUpsert> batch;
      for (size_t i = 0; i < ids.size(); ++i) batch.push_back({ids[i], vectors[i]});
      if (Status s = collection->upsert_batch(batch); !s.ok()) {
        std::fprintf(stderr, "%s\n", s.error().to_string().c_str());
        std::_Exit(1);
      }
      for (uint64_t i = n; i < last; ++i) report(i);
    }
  };
  std::vector<std::thread> writers;
  for (int i = 0; i < 4; ++i) writers.emplace_back(single_writer);
  writers.emplace_back(batch_writer);
  for (auto& t : writers) t.join();
  (*store)->stop();
  return 0;
}
