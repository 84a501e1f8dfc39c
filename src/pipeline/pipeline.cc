#include "pipeline/pipeline.h"

#include <sstream>

#include "events/topics.h"

namespace deeplens {

Result<StageSet> StageSet::parse(const std::string& text) {
  StageSet s{false, false, false, false, false, false};
  std::stringstream in(text);
  std::string item;
  bool any = false;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    any = true;
    if (item == "all") s = StageSet{};
    else if (item == "orchestrate") s.orchestrate = true;
    else if (item == "extract") s.extract = true;
    else if (item == "index") s.index = true;
    else if (item == "notify") s.notify = true;
    else if (item == "retry") s.retry = true;
    else if (item == "thumbnail") s.thumbnail = true;
    else
      return Error(ErrorCode::kInvalidArgument,
                   "unknown stage '" + item + "'; stages are orchestrate, thumbnail, extract, index, notify, retry")
          .with("stage", item);
  }
  if (!any) return Error(ErrorCode::kInvalidArgument, "no stages given");
  return s;
}

Pipeline::Pipeline(EventBus& bus, PipelineContext& ctx, PipelineRunOptions options)
    : bus_(bus), ctx_(ctx), options_(std::move(options)) {
  orchestrator_ = std::make_unique<Orchestrator>(ctx_);
  thumbnail_ = std::make_unique<ThumbnailStage>(ctx_);
  extract_ = std::make_unique<ExtractStage>(ctx_);
  index_ = std::make_unique<IndexStage>(ctx_);
  notify_ = std::make_unique<NotifyStage>(ctx_);
  retry_ = std::make_unique<RetryStage>(ctx_);
}

Pipeline::~Pipeline() { stop(); }

std::vector<LaneSpec> Pipeline::lanes(std::string_view base) const {
  std::vector<LaneSpec> out;
  for (size_t i = 0; i < kPriorities.size(); ++i)
    out.push_back(LaneSpec{priority_name(kPriorities[i]), lane_topic(base, kPriorities[i]), ctx_.options.lane_weights[i]});
  return out;
}

Status Pipeline::start() {
  auto add = [&](bool enabled, const char* stage, StageHandler& handler, const char* group,
                 std::vector<std::string> topics, int members, size_t batch,
                 std::vector<LaneSpec> lanes = {}) -> Status {
    if (!enabled) return {};
    StageRunnerOptions o;
    o.stage = stage;
    o.consumer.group = group;
    o.consumer.topics = std::move(topics);
    o.lanes = std::move(lanes);
    o.consumer.max_batch = batch;
    o.members = members;
    o.poll_timeout = options_.poll_timeout;
    auto runner = std::make_unique<StageRunner>(bus_, handler, ctx_.metrics, o);
    if (auto st = runner->start(); !st) return st;
    runners_.push_back(std::move(runner));
    return {};
  };
  const auto& s = options_.stages;
  // Downstream first, so nothing produced waits on a stage that has not started.
  Status st = add(s.notify, "notify", *notify_, groups::kNotifier,
                  {std::string(topics::kProcessingCompleted), std::string(topics::kProcessingFailed)}, 1, 32);
  if (st) st = add(s.retry, "retry", *retry_, groups::kRetry, {std::string(topics::kProcessingFailed)}, 1, 32);
  if (st) st = add(s.index, "index", *index_, groups::kIndexer, {std::string(topics::kVectorsIndexing)},
                   options_.index_members, 32);
  if (st) st = add(s.extract, "extract", *extract_, groups::kExtractor, {}, options_.extract_members,
                   options_.extract_batch, lanes(topics::kFeaturesExtraction));
  if (st) st = add(s.thumbnail, "thumbnail", *thumbnail_, groups::kThumbnailer, {}, 1, 8,
                   lanes(topics::kImagesUploaded));
  if (st) st = add(s.orchestrate, "orchestrate", *orchestrator_, groups::kOrchestrator, {}, 1, 32,
                   lanes(topics::kImagesUploaded));
  if (!st) {
    stop();
    return st;
  }
  if (s.retry) retry_->start();
  started_ = true;
  return {};
}

const std::vector<StageQueue>& stage_queues() {
  static const std::vector<StageQueue> kQueues = {
      {"orchestrate", groups::kOrchestrator, "", lane_topics(topics::kImagesUploaded)},
      {"thumbnail", groups::kThumbnailer, "", lane_topics(topics::kImagesUploaded)},
      {"extract", groups::kExtractor, "feature_extraction", lane_topics(topics::kFeaturesExtraction)},
      {"index", groups::kIndexer, "vector_indexing", {std::string(topics::kVectorsIndexing)}},
      {"notify", groups::kNotifier, "", {std::string(topics::kProcessingCompleted), std::string(topics::kProcessingFailed)}},
      {"retry", groups::kRetry, "", {std::string(topics::kProcessingFailed)}},
  };
  return kQueues;
}

void Pipeline::stop() {
  // Upstream first: stop taking new work, then let downstream drain what is in hand.
  for (auto it = runners_.rbegin(); it != runners_.rend(); ++it) (*it)->stop();
  runners_.clear();
  retry_->stop();
  started_ = false;
}

}  // namespace deeplens
