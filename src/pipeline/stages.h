// The pipeline's stages (ARCHITECTURE.md, "The flow"), each a StageHandler over the interfaces in
// PipelineContext:
//   Orchestrator  images.uploaded      -> features.extraction (one request per model)
//   ThumbnailStage images.uploaded     -> the thumbnail blob (beside the orchestrator, off the path
//                                         to searchable: thumbnailUrl may appear after completion)
//   ExtractStage  features.extraction  -> vectors.indexing (batched per model)
//   IndexStage    vectors.indexing     -> processing.completed (when every model is indexed)
//   NotifyStage   processing.completed + processing.failed -> listeners (WebSocket, webhooks, logs)
//   RetryStage    processing.failed    -> scheduled re-publish, or dead letter + image failed
// Every effect on metadata and every event it causes commit in one MetadataStore transaction,
// keyed by (consumer group, eventId) so a redelivered event changes nothing.
//
// Handlers are called by StageRunner threads; each is safe to share between the members of one
// stage.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "pipeline/context.h"
#include "pipeline/stage_runner.h"

namespace deeplens {

class Orchestrator final : public StageHandler {
 public:
  explicit Orchestrator(PipelineContext& ctx) : ctx_(ctx) {}
  size_t handle(std::span<const BusMessage> batch) override;

 private:
  Status handle_one(const BusMessage& msg);
  PipelineContext& ctx_;
};

class ThumbnailStage final : public StageHandler {
 public:
  explicit ThumbnailStage(PipelineContext& ctx) : ctx_(ctx) {}
  size_t handle(std::span<const BusMessage> batch) override;

 private:
  Status handle_one(const BusMessage& msg);
  PipelineContext& ctx_;
};

class ExtractStage final : public StageHandler {
 public:
  explicit ExtractStage(PipelineContext& ctx) : ctx_(ctx) {}
  size_t handle(std::span<const BusMessage> batch) override;

 private:
  PipelineContext& ctx_;
};

class IndexStage final : public StageHandler {
 public:
  explicit IndexStage(PipelineContext& ctx) : ctx_(ctx) {}
  // A batch's vectors are written with one upsert_batch per collection; then the near-duplicate
  // check searches each new vector's collection; each message's effects (step, duplicateOf,
  // completion, failure) are then committed on their own, in order.
  size_t handle(std::span<const BusMessage> batch) override;

 private:
  struct Work;
  void find_duplicates(std::vector<Work>& work, size_t ready);
  Status commit(const BusMessage& msg, Work& work);
  PipelineContext& ctx_;
};

// Something that wants to hear about finished images (WebSocket hub, webhooks).
class ImageEventListener {
 public:
  virtual ~ImageEventListener() = default;
  virtual void on_completed(const ProcessingCompletedEvent& e) = 0;
  // Called for every failure event; `final` when no retry will follow.
  virtual void on_failed(const ProcessingFailedEvent& e, bool final) = 0;
};

class NotifyStage final : public StageHandler {
 public:
  explicit NotifyStage(PipelineContext& ctx) : ctx_(ctx) {}
  void add_listener(ImageEventListener* listener);
  size_t handle(std::span<const BusMessage> batch) override;

 private:
  PipelineContext& ctx_;
  std::mutex mu_;
  std::vector<ImageEventListener*> listeners_;
};

// Consumes failure events and owns the scheduler thread that re-publishes retries when due.
class RetryStage final : public StageHandler {
 public:
  explicit RetryStage(PipelineContext& ctx) : ctx_(ctx) {}
  ~RetryStage() override { stop(); }
  size_t handle(std::span<const BusMessage> batch) override;

  void start();  // the scheduler thread
  void stop();

 private:
  Status handle_one(const BusMessage& msg);
  void run_scheduler();

  PipelineContext& ctx_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool kicked_ = false;
  std::thread scheduler_;
};

// Dead-letters a message that cannot be decoded (poison) in its own transaction.
Status dead_letter_undecodable(PipelineContext& ctx, const BusMessage& msg, const std::string& stage,
                               const Error& error);

// True when the failure will not be retried (retryable false or attempts used up).
bool is_final_failure(const ProcessingFailedEvent& e);

}  // namespace deeplens
