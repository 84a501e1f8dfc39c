// PushFeed: feeds the PushHub from the events the pipeline already publishes — no topic of its
// own. Every process that serves HTTP runs one, as a broadcast consumer (EventBus: no shared
// group, from the end of each partition), so a client connected to any `api` process hears about
// every image of its tenant, whichever process took the upload. Nothing is committed: after a
// restart the feed starts from the end again, and a client resuming across it gets a reset and
// re-reads status over REST (the status projection is the history of record).
//
// Each bus event becomes a StatusChanged (data: the status API's JSON, read from the store at
// that moment, plus "transition" and the step/model/attempt it concerns):
//   image.uploaded                -> uploaded
//   feature.extraction.requested  -> step.started   (feature_extraction, modelName)
//   vector.indexing.requested     -> step.completed (feature_extraction), step.started (vector_indexing)
//   processing.completed          -> completed, then ProcessingCompleted (data: the event as on the bus)
//   processing.failed, retryable  -> retrying (attempt, nextAttemptAt, error)
//   processing.failed, final      -> failed (status "failed", error), then ProcessingFailed (the event)
// Redelivered events (the same eventId) and events that would move an image backwards (a late
// "uploaded" after it is processing, a second completion) are dropped, so each image gets one
// ProcessingCompleted or ProcessingFailed and its StatusChanged sequence moves forward only.
#pragma once

#include <atomic>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>

#include "api/push_hub.h"
#include "bus/event_bus.h"
#include "pipeline/status.h"
#include "common/metrics.h"
#include "store/metadata_store.h"

namespace deeplens::api {

// What changed, in a StatusChanged event's data.
struct StatusTransition {
  std::string name;  // "snapshot", "uploaded", "step.started", "step.completed", "retrying", "failed", "completed"
  std::string step;  // "feature_extraction", "vector_indexing"
  std::string model_name;
  std::optional<int> attempt;
  std::optional<Timestamp> next_attempt_at;
  std::string error_code;
  std::string error_message;

  static StatusTransition of(std::string name, std::string step = {}, std::string model_name = {}) {
    StatusTransition t;
    t.name = std::move(name);
    t.step = std::move(step);
    t.model_name = std::move(model_name);
    return t;
  }
};

// The StatusChanged data of an image: its status (as GET .../status) with the transition's fields.
// NotFound when the tenant has no such image.
Result<std::string> status_changed_data(MetadataStore& store, const std::string& tenant_id, const std::string& image_id,
                                        const StatusTransition& transition, const StatusOptions& options = {});

struct PushFeedOptions {
  size_t remembered_events = 65536;  // eventIds kept to drop redeliveries
  size_t remembered_images = 65536;  // images whose progress is tracked (least recently seen forgotten)
  std::chrono::milliseconds poll_timeout{500};
  std::string group = "deeplens.push";  // the broadcast consumer's name (a suffix makes it unique)
  // When set, deeplens_push_lag_seconds observes each completion's lag: the push's publication
  // minus the completion's commit (searchableAfter).
  const Clock* clock = nullptr;
  StatusOptions status;  // lane weights for the estimates in StatusChanged
};

class PushFeed {
 public:
  PushFeed(EventBus& bus, MetadataStore& store, PushHub& hub, Metrics& metrics, PushFeedOptions options = {});
  ~PushFeed();

  // Subscribes before returning (what is published afterwards is seen), then runs a thread.
  Status start();
  void stop();

  // One bus message -> hub events. Called by the thread; public for tests.
  void handle(const BusMessage& msg);

 private:
  struct ImageProgress {
    int rank = 0;  // 0 uploaded, 1 processing, 2 done
    std::list<std::string>::iterator lru;
  };
  bool seen_event(const std::string& event_id);  // remembers it; true when it was already seen
  // The image's rank so far (-1 when unknown); records `rank` when it moves forward.
  int advance(const std::string& image_id, int rank);
  void status_changed(const std::string& tenant_id, const std::string& image_id, const StatusTransition& t);
  void run();

  EventBus& bus_;
  MetadataStore& store_;
  PushHub& hub_;
  Metrics& metrics_;
  PushFeedOptions options_;
  std::unique_ptr<Consumer> consumer_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  // Used by the feed thread only.
  std::unordered_map<std::string, bool> events_seen_;
  std::list<std::string> events_order_;
  std::unordered_map<std::string, ImageProgress> images_;
  std::list<std::string> images_lru_;  // most recent at the front
};

}  // namespace deeplens::api
