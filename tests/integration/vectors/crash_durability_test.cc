// Every upsert acknowledged before a kill -9 is present and searchable after a restart.
// A child process (vector_crash_writer) upserts from several threads, with a background
// checkpointer snapshotting continuously, and reports each acknowledged id on a pipe; the test
// SIGKILLs it mid-run, reopens the store, and checks every id ever acknowledged. Three rounds
// on the same store, so later rounds crash on top of state recovered from earlier crashes.
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "crash_vectors.h"
#include "vectors/hnsw/hnsw_store.h"

extern char** environ;

namespace deeplens {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "deeplens-crash-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct ChildRun {
  std::set<uint64_t> acked;
  bool killed = false;
  std::string error;
};

// Starts the writer, SIGKILLs it once kill_after upserts are acknowledged (or when the deadline
// passes), then drains the pipe: lines written before the kill are acknowledgements too.
ChildRun run_and_kill(const std::string& root, uint64_t first, uint64_t count, size_t kill_after) {
  ChildRun run;
  int fds[2];
  if (::pipe(fds) != 0) {
    run.error = std::string("pipe: ") + std::strerror(errno);
    return run;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  const std::string first_s = std::to_string(first), count_s = std::to_string(count);
  char* argv[] = {const_cast<char*>(VECTOR_CRASH_WRITER), const_cast<char*>(root.c_str()),
                  const_cast<char*>(first_s.c_str()), const_cast<char*>(count_s.c_str()), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, VECTOR_CRASH_WRITER, &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    run.error = std::string("posix_spawn: ") + std::strerror(rc);
    return run;
  }

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  std::string buffer;
  char chunk[4096];
  for (;;) {
    if (!run.killed && (run.acked.size() >= kill_after || std::chrono::steady_clock::now() > deadline)) {
      ::kill(pid, SIGKILL);
      run.killed = true;
    }
    const ssize_t n = ::read(fds[0], chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child is gone
    buffer.append(chunk, static_cast<size_t>(n));
    size_t start = 0;
    for (size_t nl; (nl = buffer.find('\n', start)) != std::string::npos; start = nl + 1) {
      const std::string line = buffer.substr(start, nl - start);
      if (line.rfind("ok ", 0) == 0) run.acked.insert(std::stoull(line.substr(3)));
    }
    buffer.erase(0, start);
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
    run.error = "the writer was not killed mid-run (exit status " + std::to_string(status) +
                "); raise its count so the kill lands while it writes";
  }
  return run;
}

TEST(VectorCrashDurability, EveryAcknowledgedUpsertSurvivesKill9) {
  TempDir dir;
  const std::string root = dir.path() + "/store";
  std::set<uint64_t> acked;
  const size_t kill_after[] = {150, 400, 800};
  for (int round = 0; round < 3; ++round) {
    const uint64_t first = static_cast<uint64_t>(round) * 1'000'000;
    ChildRun run = run_and_kill(root, first, 200'000, kill_after[round]);
    ASSERT_TRUE(run.error.empty()) << run.error;
    ASSERT_GE(run.acked.size(), kill_after[round]);
    acked.insert(run.acked.begin(), run.acked.end());

    HnswOptions options;
    options.exact_search_below = 0;  // check through the HNSW graph, not a brute-force scan
    auto store = HnswVectorStore::open(root, options);
    ASSERT_TRUE(store.ok()) << store.error().to_string();
    VectorIndex* index = (*store)->find_collection(crash_test::kCollection);
    ASSERT_NE(index, nullptr);
    EXPECT_GE(index->count(), acked.size());
    const auto* report = &static_cast<HnswIndex*>(index)->open_report();
    std::printf("round %d: %zu acknowledged (%zu in all), %zu in the index; restart replayed %llu records "
                "after snapshot %llu (%zu vectors) in %.0f ms, dropped %llu torn bytes\n",
                round, run.acked.size(), acked.size(), index->count(),
                static_cast<unsigned long long>(report->records_replayed),
                static_cast<unsigned long long>(report->snapshot_generation), report->snapshot_vectors,
                report->total_ms, static_cast<unsigned long long>(report->torn_bytes_dropped));
    size_t missing = 0, not_first = 0;
    for (uint64_t n : acked) {
      const auto expected = crash_test::vector_for(n);
      auto got = index->get(crash_test::id_for(n));
      if (!got.ok()) {
        if (++missing <= 5) ADD_FAILURE() << "acknowledged " << crash_test::id_for(n) << " is missing";
        continue;
      }
      auto hits = index->search(expected, 1, -1.0f);
      ASSERT_TRUE(hits.ok());
      if (hits->empty() || (*hits)[0].id != crash_test::id_for(n) || (*hits)[0].score < 0.999f) {
        if (++not_first <= 5) ADD_FAILURE() << crash_test::id_for(n) << " is not its own nearest neighbour";
      }
    }
    EXPECT_EQ(missing, 0u);
    EXPECT_EQ(not_first, 0u);
  }
}

}  // namespace
}  // namespace deeplens
