// SIGKILL of the pipeline process mid-run, then restart: every accepted image completes, with
// no duplicate vector, step or completion event (issue #3 acceptance).
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include "support/pipeline_harness.h"
#include "support/test_extractor.h"

extern char** environ;

namespace deeplens {
namespace {

using namespace std::chrono_literals;

pid_t spawn_worker(const std::filesystem::path& dir, int delay_ms) {
  const std::string exe = PIPELINE_TEST_WORKER;
  std::string d = dir.string(), delay = std::to_string(delay_ms);
  char* argv[] = {const_cast<char*>(exe.c_str()), d.data(), delay.data(), nullptr};
  pid_t pid = 0;
  EXPECT_EQ(posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, environ), 0);
  return pid;
}

TEST(PipelineCrash, EveryAcceptedImageCompletesAfterSigkillAndRestart) {
  const auto dir = testing::make_temp_dir("deeplens-crash");
  SystemClock clock;
  SystemRandom random;
  app::NodeOptions o;
  o.data_dir = dir;
  o.open_vectors = false;  // the worker process owns the vector store
  // This process uploads and audits; it runs no stage.
  auto node = app::Node::open(o, [](const std::string& name) -> Extractor* {
    static testing::TestExtractor known("test", 16);
    return name == "test" ? &known : nullptr;
  }, clock, random);
  ASSERT_TRUE(node.ok()) << node.error().to_string();
  auto audit_owner = std::make_unique<testing::CompletionAudit>((*node)->bus());
  auto& audit = *audit_owner;

  std::vector<std::string> ids;
  for (int i = 0; i < 200; ++i) {
    auto r = testing::upload_bytes((*node)->context(), "acme-corp", "crash-image-" + std::to_string(i), {"test"});
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    ids.push_back(r->image.image_id);
  }
  auto completed = [&] { return testing::count_status((*node)->store(), "completed"); };

  pid_t worker = spawn_worker(dir, 10);
  // Never leave a worker behind when an assertion ends the test early.
  struct Reaper {
    pid_t& pid;
    ~Reaper() {
      if (pid > 0 && ::kill(pid, SIGKILL) == 0) ::waitpid(pid, nullptr, 0);
    }
  } reaper{worker};
  ASSERT_TRUE(testing::wait_until([&] { return completed() >= 40; }, 60s)) << completed();
  ASSERT_EQ(::kill(worker, SIGKILL), 0);
  int status = 0;
  ::waitpid(worker, &status, 0);
  worker = 0;
  const int64_t at_kill = completed();
  EXPECT_LT(at_kill, 200) << "the kill should land mid-run";

  // More uploads while the pipeline is down are accepted too.
  for (int i = 0; i < 10; ++i) {
    auto r = testing::upload_bytes((*node)->context(), "acme-corp", "while-down-" + std::to_string(i), {"test"});
    ASSERT_TRUE(r.ok());
    ids.push_back(r->image.image_id);
  }
  worker = spawn_worker(dir, 0);
  ASSERT_TRUE(testing::wait_until([&] { return completed() == 210; }, 90s)) << completed();
  ASSERT_TRUE(testing::wait_until([&] { return audit.drain().size() == 210; }, 20s)) << audit.drain().size();
  for (const auto& [image, n] : audit.drain()) EXPECT_EQ(n, 1) << image;
  ASSERT_EQ(::kill(worker, SIGTERM), 0);
  ::waitpid(worker, &status, 0);
  worker = 0;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "clean stop on SIGTERM";

  // Exactly one vector per image, all searchable, after reopening the store.
  auto vectors = HnswVectorStore::open((dir / "vectors").string());
  ASSERT_TRUE(vectors.ok()) << vectors.error().to_string();
  VectorIndex* index = (*vectors)->find_collection(collection_name("acme-corp", "test"));
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->count(), 210u);
  for (const auto& id : ids) {
    auto steps = (*node)->store().get_steps(id);
    ASSERT_TRUE(steps.ok());
    EXPECT_EQ(steps->size(), 2u);
    EXPECT_TRUE(index->get(id).ok()) << id;
  }
  audit_owner.reset();
  node->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace deeplens
