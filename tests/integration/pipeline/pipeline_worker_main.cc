// A pipeline process for crash tests: runs every stage on <data_dir> with the deterministic test
// extractor (optionally slowed down) until SIGTERM/SIGINT, then stops cleanly. The tests SIGKILL it.
//   pipeline_test_worker DATA_DIR [DELAY_MS]
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include "app/node.h"
#include "common/log.h"
#include "support/test_extractor.h"

int main(int argc, char** argv) {
  using namespace deeplens;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DATA_DIR [DELAY_MS]\n", argv[0]);
    return 2;
  }
  init_logging({LogLevel::kWarn, true});
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  testing::TestExtractor extractor("test", 16, std::chrono::milliseconds(argc > 2 ? std::atoi(argv[2]) : 0));
  SystemClock clock;
  SystemRandom random;
  app::NodeOptions o;
  o.data_dir = argv[1];
  o.pipeline.retry = RetryPolicy{3, 20, 1};
  o.run.poll_timeout = std::chrono::milliseconds(200);
  auto node = app::Node::open(o, [&](const std::string& name) -> Extractor* {
    return name == "test" ? &extractor : nullptr;
  }, clock, random);
  if (!node) {
    std::fprintf(stderr, "open: %s\n", node.error().to_string().c_str());
    return 1;
  }
  if (auto st = (*node)->start_pipeline(); !st) {
    std::fprintf(stderr, "start: %s\n", st.error().to_string().c_str());
    return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  (*node)->stop();
  return 0;
}
