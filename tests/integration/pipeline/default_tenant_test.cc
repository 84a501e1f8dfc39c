// Processes that start together on a fresh data directory (issue #13, bug 1): each creates the
// default tenant if it is missing. It used to read, then create — the loser of the race exited with
// "tenant already exists". Now exactly one creates it and prints a key; none fails.
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <thread>

#include "app/runtime.h"
#include "support/pipeline_harness.h"

namespace deeplens {
namespace {

TEST(DefaultTenant, ProcessesStartingTogetherCreateItOnceAndNoneFails) {
  const auto dir = testing::make_temp_dir("deeplens-default-tenant");
  constexpr int kProcesses = 8;
  std::vector<std::unique_ptr<app::Runtime>> runtimes;
  for (int i = 0; i < kProcesses; ++i) {
    app::GlobalFlags flags;
    flags.overrides = {"data_dir=" + dir.string(), "log.level=error"};
    auto rt = app::open_runtime(flags, app::Role::kOperator);
    ASSERT_TRUE(rt.ok()) << rt.error().to_string();
    runtimes.push_back(std::move(rt).value());  // one SQLite connection set each, like a process
  }
  std::barrier start(kProcesses);
  std::atomic<int> failures{0}, keys_printed{0};
  std::vector<std::thread> threads;
  for (auto& rt : runtimes) {
    threads.emplace_back([&, raw = rt.get()] {
      start.arrive_and_wait();
      auto key = app::ensure_default_tenant(*raw);
      if (!key) {
        ++failures;
        ADD_FAILURE() << key.error().to_string();
      } else if (!key->empty()) {
        ++keys_printed;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(keys_printed.load(), 1) << "exactly one process generates (and prints) the key";
  auto tenants = runtimes[0]->node->store().list_tenants();
  ASSERT_TRUE(tenants.ok());
  ASSERT_EQ(tenants->size(), 1u);
  EXPECT_EQ((*tenants)[0].id, "default");
  auto keys = runtimes[0]->node->store().list_api_keys("default");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys->size(), 1u);
  runtimes.clear();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace deeplens
