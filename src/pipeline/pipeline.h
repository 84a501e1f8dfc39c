// Pipeline: the stages this process runs (all of them for `deeplens serve`, a chosen set for
// `deeplens worker --stages ...`), each on its own StageRunner. start() starts them downstream
// first; stop() stops them upstream first, each finishing its batch in hand.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bus/event_bus.h"
#include "pipeline/context.h"
#include "pipeline/stages.h"

namespace deeplens {

struct StageSet {
  bool orchestrate = true;
  bool extract = true;
  bool index = true;
  bool notify = true;
  bool retry = true;
  bool thumbnail = true;
  // "orchestrate,thumbnail,extract,index,notify,retry" (any subset; "all").
  static Result<StageSet> parse(const std::string& text);
};

struct PipelineRunOptions {
  StageSet stages;
  int extract_members = 1;   // pipeline.extract_workers: consumer threads for extraction
  int index_members = 1;     // pipeline.index_workers
  size_t extract_batch = 8;  // pipeline.extract_batch: images per batched forward
  std::chrono::milliseconds poll_timeout{1000};
};

class Pipeline {
 public:
  Pipeline(EventBus& bus, PipelineContext& ctx, PipelineRunOptions options);
  ~Pipeline();

  Status start();
  void stop();
  NotifyStage& notifier() { return *notify_; }

 private:
  // The lanes of a topic where images wait, highest first, weighted by pipeline.priority_weights.
  std::vector<LaneSpec> lanes(std::string_view base) const;

  EventBus& bus_;
  PipelineContext& ctx_;
  PipelineRunOptions options_;
  std::unique_ptr<Orchestrator> orchestrator_;
  std::unique_ptr<ThumbnailStage> thumbnail_;
  std::unique_ptr<ExtractStage> extract_;
  std::unique_ptr<IndexStage> index_;
  std::unique_ptr<NotifyStage> notify_;
  std::unique_ptr<RetryStage> retry_;
  std::vector<std::unique_ptr<StageRunner>> runners_;  // in start order
  bool started_ = false;
};

}  // namespace deeplens
