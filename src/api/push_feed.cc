#include "api/push_feed.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "events/codec.h"
#include "events/topics.h"
#include "pipeline/stages.h"
#include "pipeline/status.h"

namespace deeplens::api {

Result<std::string> status_changed_data(MetadataStore& store, const std::string& tenant_id, const std::string& image_id,
                                        const StatusTransition& t, const StatusOptions& options) {
  auto view = load_status(store, tenant_id, image_id, options);
  if (!view) return std::move(view).error();
  nlohmann::ordered_json j = status_object(*view);
  j["transition"] = t.name;
  if (!t.step.empty()) j["step"] = t.step;
  if (!t.model_name.empty()) j["modelName"] = t.model_name;
  if (t.attempt) j["attempt"] = *t.attempt;
  if (t.next_attempt_at) j["nextAttemptAt"] = format_iso8601(*t.next_attempt_at);
  if (t.name == "failed") {
    // The retry stage marks the image failed when it handles this same event; the transition is
    // already final, so say so rather than show the status of a moment before.
    j["status"] = "failed";
    j["estimatedTimeRemaining"] = nullptr;
  }
  if (!t.error_code.empty()) j["error"] = {{"code", t.error_code}, {"message", t.error_message}};
  return j.dump();
}

PushFeed::PushFeed(EventBus& bus, MetadataStore& store, PushHub& hub, Metrics& metrics, PushFeedOptions options)
    : bus_(bus), store_(store), hub_(hub), metrics_(metrics), options_(std::move(options)) {
  metrics_.describe("deeplens_push_events_total", "counter", "real-time events published to the hub, by event");
  metrics_.describe("deeplens_push_lag_seconds", "histogram",
                    "completion commit (searchableAfter) to its push being published, in this process");
}

PushFeed::~PushFeed() { stop(); }

Status PushFeed::start() {
  if (thread_.joinable()) return {};
  ConsumerOptions co;
  co.group = options_.group;
  co.broadcast = true;
  co.max_batch = 64;
  for (auto t : topics::kAll) co.topics.emplace_back(t);
  auto consumer = bus_.subscribe(co);
  if (!consumer) return std::move(consumer).error();
  consumer_ = std::move(consumer).value();
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
  return {};
}

void PushFeed::stop() {
  stopping_ = true;
  if (consumer_) consumer_->wake();
  if (thread_.joinable()) thread_.join();
  if (consumer_) consumer_->close();
  consumer_.reset();
}

void PushFeed::run() {
  while (!stopping_) {
    auto batch = consumer_->poll(options_.poll_timeout);
    if (!batch) {
      log_warn("push.poll_failed", {{"error", batch.error().to_string()}});
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    // One poll can hold several steps of one image from different topics, read partition by
    // partition: put them back in pipeline order (a stable sort keeps each topic's own order).
    auto step_of = [](const BusMessage& m) {
      const std::string_view base = base_topic(m.topic);  // a lane is its stage's step
      const std::string_view order[] = {topics::kImagesUploaded, topics::kFeaturesExtraction, topics::kVectorsIndexing};
      for (size_t i = 0; i < 3; ++i)
        if (base == order[i]) return i;
      return size_t{3};  // completed and failed are both last
    };
    std::stable_sort(batch->begin(), batch->end(),
                     [&](const BusMessage& a, const BusMessage& b) { return step_of(a) < step_of(b); });
    for (const auto& msg : *batch) {
      try {
        handle(msg);
      } catch (const std::exception& e) {  // a bad event must not stop the feed
        log_warn("push.event_failed", {{"topic", msg.topic}, {"error", e.what()}});
      }
    }
  }
}

bool PushFeed::seen_event(const std::string& event_id) {
  if (!events_seen_.emplace(event_id, true).second) return true;
  events_order_.push_back(event_id);
  if (events_order_.size() > options_.remembered_events) {
    events_seen_.erase(events_order_.front());
    events_order_.pop_front();
  }
  return false;
}

int PushFeed::advance(const std::string& image_id, int rank) {
  auto it = images_.find(image_id);
  if (it == images_.end()) {
    images_lru_.push_front(image_id);
    images_.emplace(image_id, ImageProgress{rank, images_lru_.begin()});
    if (images_.size() > options_.remembered_images) {
      images_.erase(images_lru_.back());
      images_lru_.pop_back();
    }
    return -1;
  }
  images_lru_.splice(images_lru_.begin(), images_lru_, it->second.lru);
  const int before = it->second.rank;
  it->second.rank = std::max(before, rank);
  return before;
}

void PushFeed::status_changed(const std::string& tenant_id, const std::string& image_id, const StatusTransition& t) {
  auto data = status_changed_data(store_, tenant_id, image_id, t, options_.status);
  if (!data) {
    if (data.error().code != ErrorCode::kNotFound)  // a deleted image has no status to push
      log_warn("push.status_failed", {{"imageId", image_id}, {"error", data.error().to_string()}});
    return;
  }
  hub_.publish(tenant_id, image_id, "StatusChanged", *data);
  metrics_.add("deeplens_push_events_total", {{"event", "StatusChanged"}});
}

void PushFeed::handle(const BusMessage& msg) {
  auto decoded = decode_any(msg.payload);
  if (!decoded) return;  // poison is the stages' business (they dead-letter it)
  const EventEnvelope& env = envelope(*decoded);
  if (seen_event(env.event_id)) return;
  const std::string& tenant = env.tenant_id;
  const std::string& image = image_id(*decoded);

  if (std::holds_alternative<ImageUploadedEvent>(*decoded)) {
    if (advance(image, 0) > 0) return;  // already further along
    status_changed(tenant, image, StatusTransition::of("uploaded"));
  } else if (const auto* fx = std::get_if<FeatureExtractionRequestedEvent>(&*decoded)) {
    if (advance(image, 1) > 1) return;
    auto t = StatusTransition::of("step.started", "feature_extraction", fx->data.model_name);
    t.attempt = fx->retry_policy.current_attempt;
    status_changed(tenant, image, t);
  } else if (const auto* vx = std::get_if<VectorIndexingRequestedEvent>(&*decoded)) {
    if (advance(image, 1) > 1) return;
    status_changed(tenant, image,
                   StatusTransition::of("step.completed", "feature_extraction", vx->data.model_name));
    auto t = StatusTransition::of("step.started", "vector_indexing", vx->data.model_name);
    if (vx->retry_policy) t.attempt = vx->retry_policy->current_attempt;
    status_changed(tenant, image, t);
  } else if (const auto* done = std::get_if<ProcessingCompletedEvent>(&*decoded)) {
    if (advance(image, 2) >= 2) return;  // one completion per image
    status_changed(tenant, image, StatusTransition::of("completed"));
    if (options_.clock)
      metrics_.observe("deeplens_push_lag_seconds", {},
                       std::chrono::duration<double>(options_.clock->now() - done->data.searchable_after).count());
    hub_.publish(tenant, image, "ProcessingCompleted", msg.payload);
    metrics_.add("deeplens_push_events_total", {{"event", "ProcessingCompleted"}});
  } else if (const auto* f = std::get_if<ProcessingFailedEvent>(&*decoded)) {
    const bool final = is_final_failure(*f);
    auto t = StatusTransition::of(final ? "failed" : "retrying", f->data.stage, f->data.model_name.value_or(""));
    t.attempt = f->data.attempt;
    if (!final) t.next_attempt_at = f->data.next_attempt_at;
    t.error_code = f->data.error_code;
    t.error_message = f->data.error_message;
    if (advance(image, final ? 2 : 1) >= 2) return;
    status_changed(tenant, image, t);
    if (final) {
      hub_.publish(tenant, image, "ProcessingFailed", msg.payload);
      metrics_.add("deeplens_push_events_total", {{"event", "ProcessingFailed"}});
    }
  }
}

}  // namespace deeplens::api
