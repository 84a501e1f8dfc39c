#include "pipeline/stages.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "events/codec.h"
#include "events/topics.h"
#include "pipeline/event_factory.h"

namespace deeplens {
namespace {

using Clock_ = std::chrono::steady_clock;

int64_t ms_since(Clock_::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock_::now() - start).count();
}

// A failure outcome of a stage for one event.
struct Failure {
  std::string code;  // UPPER_SNAKE
  std::string message;
  bool retryable = false;
};

ProcessingFailedEvent make_failure(PipelineContext& ctx, const EventEnvelope& original,
                                   const std::string& image_id, const std::string& stage,
                                   std::optional<std::string> model, const Failure& f,
                                   const RetryPolicy& policy, std::string_view original_topic,
                                   const std::string& original_payload) {
  ProcessingFailedEvent e;
  const Timestamp now = ctx.clock.now();
  e.envelope = {ctx.ids.event_id(), now, original.tenant_id, original.correlation_id.value_or(original.event_id)};
  e.data.image_id = image_id;
  e.data.stage = stage;
  e.data.model_name = std::move(model);
  e.data.error_code = f.code;
  e.data.error_message = f.message;
  e.data.attempt = policy.current_attempt;
  e.data.max_attempts = policy.max_attempts;
  e.data.retryable = f.retryable;
  if (f.retryable && policy.current_attempt < policy.max_attempts) {
    const double factor = std::pow(2.0, policy.current_attempt - 1);
    e.data.next_attempt_at = now + std::chrono::milliseconds(static_cast<int64_t>(policy.backoff_ms * factor));
  }
  e.data.original_topic = std::string(original_topic);
  e.data.original_event_json = original_payload;
  return e;
}

// Enqueues a failure and, when it is final, its "processing.failed" webhook deliveries (the same
// transaction, so neither exists without the other).
Status enqueue_failure(MetadataTx& tx, const ProcessingFailedEvent& f) {
  const OutboxMessage msg = to_outbox(f);
  if (auto st = tx.enqueue(msg); !st) return st;
  if (!is_final_failure(f)) return {};
  return tx.queue_webhook(WebhookEvent{f.envelope.tenant_id, std::string(event_types::kProcessingFailed),
                                       f.envelope.event_id, msg.payload});
}

Result<bool> already_processed(PipelineContext& ctx, const char* group, const std::string& event_id) {
  bool processed = false;
  auto st = ctx.store.transact([&](MetadataTx& tx) -> Status {
    auto r = tx.is_processed(group, event_id);
    if (!r) return std::move(r).error();
    processed = *r;
    return {};
  });
  if (!st) return std::move(st).error();
  return processed;
}

std::string step_for_stage(const std::string& stage) {
  if (stage == "feature_extraction") return "feature_extraction";
  if (stage == "vector_indexing") return "vector_indexing";
  return {};
}

void log_failure(const ProcessingFailedEvent& f) {
  log_warn("stage.failed", {{"stage", f.data.stage}, {"tenantId", f.envelope.tenant_id},
                            {"imageId", f.data.image_id},
                            {"correlationId", f.envelope.correlation_id.value_or("")},
                            {"code", f.data.error_code}, {"error", f.data.error_message},
                            {"attempt", f.data.attempt}, {"maxAttempts", f.data.max_attempts},
                            {"retryable", f.data.retryable}});
}

}  // namespace

bool is_final_failure(const ProcessingFailedEvent& e) {
  return !e.data.retryable || e.data.attempt >= e.data.max_attempts;
}

Status dead_letter_undecodable(PipelineContext& ctx, const BusMessage& msg, const std::string& stage,
                               const Error& error) {
  log_error("event.undecodable", {{"topic", msg.topic}, {"partition", msg.partition},
                                  {"offset", static_cast<long long>(msg.offset)}, {"stage", stage},
                                  {"error", error.message}});
  ctx.metrics.add("deeplens_dead_letters_total", {{"stage", stage}, {"reason", "undecodable"}});
  return ctx.store.transact([&](MetadataTx& tx) -> Status {
    DeadLetter d;
    d.topic = msg.topic;
    d.key = msg.key;
    d.payload = msg.payload;
    d.stage = stage;
    d.error_code = "UNDECODABLE";
    d.error_message = error.message;
    d.tenant_id = msg.header("tenantId");
    return tx.add_dead_letter(d);
  });
}

// ------------------------------------------------------------------------------------------------
// Orchestrator

size_t Orchestrator::handle(std::span<const BusMessage> batch) {
  for (size_t i = 0; i < batch.size(); ++i) {
    if (auto st = handle_one(batch[i]); !st) {
      log_warn("stage.retry_later", {{"stage", "orchestrate"}, {"error", st.error().to_string()}});
      return i;
    }
  }
  return batch.size();
}

Status Orchestrator::handle_one(const BusMessage& msg) {
  auto decoded = decode_image_uploaded(msg.payload);
  if (!decoded) return dead_letter_undecodable(ctx_, msg, "orchestration", decoded.error());
  const ImageUploadedEvent& ev = *decoded;
  const auto& tenant = ev.envelope.tenant_id;
  const auto& image_id = ev.data.image_id;

  std::string unknown_model;
  for (const auto& m : ev.processing_options.models)
    if (!ctx_.models(m)) unknown_model = m;

  return ctx_.store.transact([&](MetadataTx& tx) -> Status {
    auto processed = tx.is_processed(groups::kOrchestrator, ev.envelope.event_id);
    if (!processed) return std::move(processed).error();
    if (*processed) return {};
    if (auto st = tx.mark_processed(groups::kOrchestrator, ev.envelope.event_id); !st) return st;
    auto current = tx.get_image(image_id);
    if (!current) return current.error().code == ErrorCode::kNotFound ? Status() : Status(std::move(current).error());

    if (!unknown_model.empty()) {
      RetryPolicy once{1, 0, 1};
      auto failure = make_failure(ctx_, ev.envelope, image_id, "orchestration", unknown_model,
                                  {"UNKNOWN_MODEL", "model '" + unknown_model + "' is not configured", false},
                                  once, msg.topic, msg.payload);
      log_failure(failure);
      return enqueue_failure(tx, failure);
    }

    auto steps = tx.get_steps(image_id);
    if (!steps) return std::move(steps).error();
    auto has_step = [&](const std::string& model, const std::string& step) {
      return std::any_of(steps->begin(), steps->end(),
                         [&](const StepRecord& s) { return s.model == model && s.step == step; });
    };
    for (const auto& model : ev.processing_options.models) {
      for (const char* step : {"feature_extraction", "vector_indexing"}) {
        if (has_step(model, step)) continue;
        StepRecord s;
        s.image_id = image_id;
        s.model = model;
        s.step = step;
        if (auto st = tx.upsert_step(s); !st) return st;
      }
    }
    if (current->status != ImageStatus::kCompleted)
      if (auto st = tx.set_image_status(image_id, ImageStatus::kProcessing); !st) return st;

    const std::string correlation = ev.envelope.correlation_id.value_or(ev.envelope.event_id);
    for (const auto& model : ev.processing_options.models) {
      const Extractor* extractor = ctx_.models(model);
      FeatureExtractionRequestedEvent req;
      req.envelope = {ctx_.ids.event_id(), ctx_.clock.now(), tenant, correlation};
      req.data.image_id = image_id;
      req.data.image_path = ctx_.blobs.file_path(current->storage_path);
      req.data.model_name = model;
      req.data.model_version = extractor->info().version;
      req.data.expected_dimension = extractor->info().dimension;
      req.data.priority = ev.processing_options.priority.value_or(Priority::kNormal);
      req.data.extraction_options = ExtractionOptions{extractor->info().normalize, true, ctx_.options.extraction_timeout_s};
      req.retry_policy = ctx_.options.retry;
      req.retry_policy.current_attempt = 1;
      if (auto st = tx.enqueue(to_outbox(req)); !st) return st;
    }
    log_info("image.orchestrated", {{"tenantId", tenant}, {"imageId", image_id}, {"correlationId", correlation},
                                    {"models", static_cast<long long>(ev.processing_options.models.size())}});
    return {};
  });
}

// ------------------------------------------------------------------------------------------------
// ThumbnailStage

size_t ThumbnailStage::handle(std::span<const BusMessage> batch) {
  for (size_t i = 0; i < batch.size(); ++i) {
    if (auto st = handle_one(batch[i]); !st) {
      log_warn("stage.retry_later", {{"stage", "thumbnail"}, {"error", st.error().to_string()}});
      return i;
    }
  }
  return batch.size();
}

Status ThumbnailStage::handle_one(const BusMessage& msg) {
  auto decoded = decode_image_uploaded(msg.payload);
  if (!decoded) return {};  // the orchestrator dead-letters it; nothing to make here
  const ImageUploadedEvent& ev = *decoded;
  if (!ev.processing_options.generate_thumbnail.value_or(true)) return {};
  const auto& tenant = ev.envelope.tenant_id;
  const auto& image_id = ev.data.image_id;
  auto image = ctx_.store.get_image(tenant, image_id);
  if (!image) return image.error().code == ErrorCode::kNotFound ? Status() : Status(std::move(image).error());
  if (!image->thumbnail_path.empty()) return {};

  // The blob is an idempotent side effect (same key every time), written before the commit. A
  // thumbnail that cannot be made is logged and skipped: it never holds up the image.
  auto bytes = ctx_.blobs.read(image->storage_path);
  if (!bytes) {
    if (bytes.error().code == ErrorCode::kNotFound) return {};
    return std::move(bytes).error();
  }
  auto span = std::span(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size());
  auto thumb = make_thumbnail(span, ctx_.options.thumbnail_edge, ThumbnailFormat::kJpeg, ctx_.options.limits);
  if (!thumb) {
    log_warn("thumbnail.failed", {{"imageId", image_id}, {"error", thumb.error().to_string()}});
    return {};
  }
  const std::string key = blob_key("thumbnails", tenant, image_id, "jpg", image->created_at);
  if (auto st = ctx_.blobs.put(key, *thumb); !st) return st;
  bool image_gone = false;
  auto st = ctx_.store.transact([&](MetadataTx& tx) -> Status {
    image_gone = false;
    auto processed = tx.is_processed(groups::kThumbnailer, ev.envelope.event_id);
    if (!processed) return std::move(processed).error();
    if (*processed) return {};
    if (auto st = tx.mark_processed(groups::kThumbnailer, ev.envelope.event_id); !st) return st;
    auto current = tx.get_image(image_id);
    if (!current) {
      image_gone = current.error().code == ErrorCode::kNotFound;
      return image_gone ? Status() : Status(std::move(current).error());
    }
    return tx.set_thumbnail(image_id, key);
  });
  // Deleted while the thumbnail was made: its blob must not outlive the image (delete_image may
  // have run before the put, so it cannot be left to it).
  if (st && image_gone)
    if (auto removed = ctx_.blobs.remove(key); !removed)
      log_warn("thumbnail.cleanup_failed", {{"imageId", image_id}, {"error", removed.error().to_string()}});
  return st;
}

// ------------------------------------------------------------------------------------------------
// ExtractStage

namespace {

struct ExtractItem {
  const BusMessage* msg = nullptr;
  FeatureExtractionRequestedEvent ev;
  ImageRecord image;
  std::string bytes;
  DecodedImage pixels;
  int64_t decode_ms = 0;
  int64_t extract_ms = 0;
  Timestamp started;
  std::optional<Failure> failure;
  std::vector<float> vector;
  bool skip = false;  // already processed / image gone: commit without effect
};

}  // namespace

size_t ExtractStage::handle(std::span<const BusMessage> batch) {
  std::vector<ExtractItem> items(batch.size());
  // Infrastructure trouble while preparing item i stops the batch there: items before it are
  // still finished (and committed), items from it on are delivered again.
  size_t end = batch.size();
  for (size_t i = 0; i < batch.size(); ++i) {
    auto& it = items[i];
    it.msg = &batch[i];
    it.started = ctx_.clock.now();
    auto decoded = decode_feature_extraction_requested(batch[i].payload);
    if (!decoded) {
      if (auto st = dead_letter_undecodable(ctx_, batch[i], "feature_extraction", decoded.error()); !st) {
        end = i;
        break;
      }
      it.skip = true;
      continue;
    }
    it.ev = std::move(decoded).value();
    auto processed = already_processed(ctx_, groups::kExtractor, it.ev.envelope.event_id);
    if (!processed) {
      end = i;
      break;
    }
    if (*processed) {
      it.skip = true;
      continue;
    }
    auto image = ctx_.store.get_image(it.ev.envelope.tenant_id, it.ev.data.image_id);
    if (!image) {
      if (image.error().code != ErrorCode::kNotFound) {
        end = i;
        break;
      }
      it.skip = true;  // deleted meanwhile
      continue;
    }
    it.image = std::move(image).value();
    Extractor* model = ctx_.models(it.ev.data.model_name);
    if (!model) {
      it.failure = Failure{"UNKNOWN_MODEL", "model '" + it.ev.data.model_name + "' is not configured", false};
      continue;
    }
    auto bytes = ctx_.blobs.read(it.image.storage_path);
    if (!bytes) {
      const bool missing = bytes.error().code == ErrorCode::kNotFound;
      it.failure = Failure{missing ? "BLOB_MISSING" : "STORAGE_UNAVAILABLE", bytes.error().message, !missing};
      continue;
    }
    it.bytes = std::move(bytes).value();
    const auto& info = model->info();
    if (info.input_width > 0) {
      const auto t0 = Clock_::now();
      auto span = std::span(reinterpret_cast<const uint8_t*>(it.bytes.data()), it.bytes.size());
      auto pixels = decode_for_model(span, info.input_width, info.input_height, ctx_.options.limits);
      it.decode_ms = ms_since(t0);
      if (!pixels) {
        it.failure = Failure{"IMAGE_DECODE_FAILED", pixels.error().message, false};
        continue;
      }
      it.pixels = std::move(pixels).value();
    }
  }

  // One batched forward per model; if a batch fails, each image is tried alone so that one bad
  // image does not fail the others.
  items.resize(end);
  std::map<std::string, std::vector<ExtractItem*>> by_model;
  for (auto& it : items)
    if (!it.skip && !it.failure) by_model[it.ev.data.model_name].push_back(&it);
  for (auto& [name, group] : by_model) {
    Extractor* model = ctx_.models(name);
    auto run = [&](std::span<ExtractItem* const> part) -> bool {
      std::vector<ExtractorInput> inputs;
      for (auto* it : part)
        inputs.push_back(ExtractorInput{it->pixels.rgb.empty() ? nullptr : &it->pixels, it->bytes, it->ev.data.image_id});
      const auto t0 = Clock_::now();
      auto vectors = model->extract(inputs);
      const int64_t per_image = ms_since(t0) / static_cast<int64_t>(part.size());
      if (!vectors) {
        if (part.size() == 1) part[0]->failure = Failure{"EXTRACTION_FAILED", vectors.error().message, true};
        return false;
      }
      for (size_t k = 0; k < part.size(); ++k) {
        part[k]->vector = std::move((*vectors)[k]);
        part[k]->extract_ms = per_image;
      }
      return true;
    };
    if (!run(group) && group.size() > 1)
      for (auto* it : group) run(std::span(&it, 1));
    ctx_.metrics.observe("deeplens_extraction_batch_size", {{"model", name}}, static_cast<double>(group.size()));
  }

  for (size_t i = 0; i < items.size(); ++i) {
    auto& it = items[i];
    if (it.skip) continue;
    if (!it.failure && it.ev.data.expected_dimension &&
        static_cast<size_t>(*it.ev.data.expected_dimension) != it.vector.size()) {
      it.failure = Failure{"DIMENSION_MISMATCH",
                           "model returned " + std::to_string(it.vector.size()) + " dimensions, expected " +
                               std::to_string(*it.ev.data.expected_dimension),
                           false};
    }
    const auto& ev = it.ev;
    const Timestamp now = ctx_.clock.now();
    auto st = ctx_.store.transact([&](MetadataTx& tx) -> Status {
      auto processed = tx.is_processed(groups::kExtractor, ev.envelope.event_id);
      if (!processed) return std::move(processed).error();
      if (*processed) return {};
      if (auto s = tx.mark_processed(groups::kExtractor, ev.envelope.event_id); !s) return s;
      StepRecord step;
      step.image_id = ev.data.image_id;
      step.model = ev.data.model_name;
      step.step = "feature_extraction";
      step.attempts = ev.retry_policy.current_attempt;
      step.started_at = it.started;
      const std::string correlation = ev.envelope.correlation_id.value_or(ev.envelope.event_id);
      if (it.failure) {
        auto failure = make_failure(ctx_, ev.envelope, ev.data.image_id, "feature_extraction", ev.data.model_name,
                                    *it.failure, ev.retry_policy, it.msg->topic, it.msg->payload);
        step.status = is_final_failure(failure) ? StepStatus::kFailed : StepStatus::kPending;
        step.last_error = it.failure->code + ": " + it.failure->message;
        if (auto s = tx.upsert_step(step); !s) return s;
        log_failure(failure);
        return enqueue_failure(tx, failure);
      }
      const int64_t duration = it.decode_ms + it.extract_ms;
      step.status = StepStatus::kCompleted;
      step.completed_at = now;
      step.duration_ms = duration;
      if (auto s = tx.upsert_step(step); !s) return s;
      const Extractor* model = ctx_.models(ev.data.model_name);
      VectorIndexingRequestedEvent out;
      out.envelope = {ctx_.ids.event_id(), now, ev.envelope.tenant_id, correlation};
      out.data.image_id = ev.data.image_id;
      out.data.model_name = ev.data.model_name;
      out.data.expected_dimension = static_cast<int>(it.vector.size());
      out.data.feature_vector = std::move(it.vector);
      out.data.vector_metadata = {now, duration, model ? model->info().version : ev.data.model_version.value_or(""),
                                  std::nullopt};
      out.data.image_metadata = IndexedImageMetadata{it.image.width, it.image.height, it.image.format, it.image.file_size};
      RetryPolicy policy = ctx_.options.retry;
      policy.current_attempt = 1;
      out.retry_policy = policy;
      log_info("features.extracted", {{"tenantId", ev.envelope.tenant_id}, {"imageId", ev.data.image_id},
                                      {"correlationId", correlation}, {"model", ev.data.model_name},
                                      {"durationMs", static_cast<long long>(duration)}});
      return tx.enqueue(to_outbox(out));
    });
    if (!st) {
      log_warn("stage.retry_later", {{"stage", "extract"}, {"error", st.error().to_string()}});
      return i;
    }
    ctx_.metrics.add(it.failure ? "deeplens_stage_failures_total" : "deeplens_extractions_total",
                     {{"stage", "extract"}, {"model", ev.data.model_name}});
    if (!it.failure) ctx_.metrics.observe("deeplens_extraction_seconds", {{"model", ev.data.model_name}},
                                          static_cast<double>(it.decode_ms + it.extract_ms) / 1000.0);
  }
  return items.size();
}

// ------------------------------------------------------------------------------------------------
// IndexStage

// One message of a batch on its way through: decoded, checked, then written with the others of
// its collection in one upsert_batch (one log write and one fsync for the embedded index, one
// request for Qdrant), then committed on its own.
struct IndexStage::Work {
  std::optional<VectorIndexingRequestedEvent> event;  // nullopt: undecodable
  Error decode_error{ErrorCode::kInternal, ""};
  bool processed = false;                   // an earlier delivery committed it
  std::optional<ImageRecord> image;         // nullopt: deleted before it was indexed
  std::string collection;
  Timestamp started;
  std::optional<Failure> failure;
  int64_t duration = 0;
  std::optional<DuplicateOf> duplicate;  // what the near-duplicate check found
};

namespace {

// processingOptions.skipDuplicateCheck as stored with the image.
bool skips_duplicate_check(const ImageRecord& image) {
  const auto po = nlohmann::json::parse(image.processing_options_json, nullptr, false);
  return po.is_object() && po.contains("skipDuplicateCheck") && po["skipDuplicateCheck"].is_boolean() &&
         po["skipDuplicateCheck"].get<bool>();
}

Failure index_failure(const Error& e) {
  const ErrorCode code = e.code;
  const bool permanent = code == ErrorCode::kInvalidArgument || code == ErrorCode::kFailedPrecondition;
  return Failure{code == ErrorCode::kFailedPrecondition ? "COLLECTION_MISMATCH"
                 : permanent                              ? "INVALID_VECTOR"
                                                          : "INDEX_UNAVAILABLE",
                 e.message, !permanent};
}

}  // namespace

size_t IndexStage::handle(std::span<const BusMessage> batch) {
  // 1. Decode and look up; a backend error stops the batch there (the rest comes again).
  std::vector<Work> work(batch.size());
  size_t ready = batch.size();
  for (size_t i = 0; i < batch.size(); ++i) {
    Work& w = work[i];
    auto decoded = decode_vector_indexing_requested(batch[i].payload);
    if (!decoded) {
      w.decode_error = decoded.error();
      continue;
    }
    w.event = std::move(decoded).value();
    auto processed = already_processed(ctx_, groups::kIndexer, w.event->envelope.event_id);
    if (!processed) {
      log_warn("stage.retry_later", {{"stage", "index"}, {"error", processed.error().to_string()}});
      ready = i;
      break;
    }
    w.processed = *processed;
    if (w.processed) continue;
    auto image = ctx_.store.get_image(w.event->envelope.tenant_id, w.event->data.image_id);
    if (!image && image.error().code != ErrorCode::kNotFound) {
      log_warn("stage.retry_later", {{"stage", "index"}, {"error", image.error().to_string()}});
      ready = i;
      break;
    }
    if (image) w.image = std::move(image).value();
    w.collection = collection_name(w.event->envelope.tenant_id, w.event->data.model_name);
    w.started = ctx_.clock.now();
  }

  // 2. One upsert_batch per collection (and dimension) for the images still there.
  std::map<std::pair<std::string, size_t>, std::vector<size_t>> groups;
  for (size_t i = 0; i < ready; ++i)
    if (work[i].event && !work[i].processed && work[i].image)
      groups[{work[i].collection, work[i].event->data.feature_vector.size()}].push_back(i);
  for (const auto& [key, members] : groups) {
    const auto t0 = Clock_::now();
    auto index = ctx_.vectors.open_collection(key.first, key.second);
    if (!index) {
      const bool permanent = index.error().code == ErrorCode::kFailedPrecondition ||
                             index.error().code == ErrorCode::kInvalidArgument;
      for (size_t i : members)
        work[i].failure = Failure{permanent ? "COLLECTION_MISMATCH" : "INDEX_UNAVAILABLE", index.error().message, !permanent};
      continue;
    }
    std::vector<VectorUpsert> upserts;
    for (size_t i : members) {
      const auto& data = work[i].event->data;
      upserts.push_back(VectorUpsert{data.image_id, data.feature_vector, data.vector_metadata.model_version});
    }
    Status st = (*index)->upsert_batch(upserts);
    if (!st && members.size() > 1 &&
        (st.error().code == ErrorCode::kInvalidArgument || st.error().code == ErrorCode::kFailedPrecondition)) {
      // One bad element rejects the whole batch: write them one by one, so only it fails.
      for (size_t m = 0; m < members.size(); ++m)
        if (auto one = (*index)->upsert_batch(std::span(&upserts[m], 1)); !one) work[members[m]].failure = index_failure(one.error());
    } else if (!st) {
      for (size_t i : members) work[i].failure = index_failure(st.error());
    }
    const int64_t duration = ms_since(t0);
    for (size_t i : members) work[i].duration = duration;
  }

  find_duplicates(work, ready);

  // 3. Commit each message's effects in order.
  for (size_t i = 0; i < ready; ++i) {
    Status st;
    if (!work[i].event)
      st = dead_letter_undecodable(ctx_, batch[i], "vector_indexing", work[i].decode_error);
    else if (!work[i].processed)
      st = commit(batch[i], work[i]);
    if (!st) {
      log_warn("stage.retry_later", {{"stage", "index"}, {"error", st.error().to_string()}});
      return i;
    }
  }
  return ready;
}

// The near-duplicate check: the best hit at or above the model's threshold among the image's
// nearest neighbours in its collection (the tenant's, for this model) that was uploaded before it
// — so of two copies indexed together the later one is the duplicate, and an image is never
// reported as a copy of a later one. A failed search is logged and skips the check: it never
// fails or delays the image.
void IndexStage::find_duplicates(std::vector<Work>& work, size_t ready) {
  constexpr size_t kCandidates = 8;  // a few copies of one photo already there still leave an earlier one
  struct Found {
    size_t item;
    std::vector<SearchHit> hits;
  };
  std::vector<Found> found;
  std::map<std::string, std::vector<std::string>> candidates;  // per tenant
  for (size_t i = 0; i < ready; ++i) {
    Work& w = work[i];
    if (!w.event || w.processed || !w.image || w.failure) continue;
    const auto& data = w.event->data;
    const auto threshold = ctx_.options.duplicate_thresholds.find(data.model_name);
    if (threshold == ctx_.options.duplicate_thresholds.end() || threshold->second <= 0) continue;
    if (skips_duplicate_check(*w.image)) continue;
    VectorIndex* index = ctx_.vectors.find_collection(w.collection);
    if (!index) continue;
    auto hits = index->search(data.feature_vector, kCandidates, static_cast<float>(threshold->second));
    if (!hits) {
      log_warn("index.duplicate_check_failed", {{"imageId", data.image_id}, {"error", hits.error().to_string()}});
      continue;
    }
    std::erase_if(*hits, [&](const SearchHit& h) { return h.id == data.image_id; });
    if (hits->empty()) continue;
    auto& ids = candidates[w.image->tenant_id];
    for (const auto& h : *hits) ids.push_back(h.id);
    found.push_back({i, std::move(hits).value()});
  }
  if (found.empty()) return;
  std::map<std::string, ImageRecord> records;
  for (auto& [tenant, ids] : candidates) {
    auto got = ctx_.store.get_images(tenant, ids);
    if (!got) {
      log_warn("index.duplicate_check_failed", {{"tenantId", tenant}, {"error", got.error().to_string()}});
      continue;
    }
    for (auto& r : *got) records.emplace(r.image_id, std::move(r));
  }
  for (const auto& f : found) {
    Work& w = work[f.item];
    const ImageRecord& self = *w.image;
    for (const auto& h : f.hits) {  // best first
      auto r = records.find(h.id);
      if (r == records.end() || r->second.tenant_id != self.tenant_id) continue;
      const ImageRecord& other = r->second;
      const bool earlier = other.created_at < self.created_at ||
                           (other.created_at == self.created_at && other.image_id < self.image_id);
      if (!earlier) continue;
      w.duplicate = DuplicateOf{other.image_id, h.score, w.event->data.model_name};
      ctx_.metrics.add("deeplens_near_duplicates_total", {{"model", w.event->data.model_name}});
      break;
    }
  }
}

Status IndexStage::commit(const BusMessage& msg, Work& work) {
  const auto& ev = *work.event;
  const auto& tenant = ev.envelope.tenant_id;
  const auto& image_id = ev.data.image_id;
  const auto& image = work.image;
  const std::string& collection = work.collection;
  const Timestamp started = work.started;
  const std::optional<Failure>& failure = work.failure;
  const int64_t duration = work.duration;
  const RetryPolicy policy = ev.retry_policy.value_or(ctx_.options.retry);
  const std::string correlation = ev.envelope.correlation_id.value_or(ev.envelope.event_id);

  bool image_gone = false;
  auto committed = ctx_.store.transact([&](MetadataTx& tx) -> Status {
    image_gone = false;
    auto again = tx.is_processed(groups::kIndexer, ev.envelope.event_id);
    if (!again) return std::move(again).error();
    if (*again) return {};
    if (auto s = tx.mark_processed(groups::kIndexer, ev.envelope.event_id); !s) return s;
    auto current = tx.get_image(image_id);
    if (!current) {
      image_gone = current.error().code == ErrorCode::kNotFound;
      return image_gone ? Status() : Status(std::move(current).error());
    }
    const Timestamp now = ctx_.clock.now();
    StepRecord step;
    step.image_id = image_id;
    step.model = ev.data.model_name;
    step.step = "vector_indexing";
    step.attempts = policy.current_attempt;
    step.started_at = started;
    step.collection_name = collection;
    if (failure) {
      auto f = make_failure(ctx_, ev.envelope, image_id, "vector_indexing", ev.data.model_name, *failure, policy,
                            topics::kVectorsIndexing, msg.payload);
      step.status = is_final_failure(f) ? StepStatus::kFailed : StepStatus::kPending;
      step.last_error = failure->code + ": " + failure->message;
      if (auto s = tx.upsert_step(step); !s) return s;
      log_failure(f);
      return enqueue_failure(tx, f);
    }
    step.status = StepStatus::kCompleted;
    step.completed_at = now;
    step.duration_ms = duration;
    if (auto s = tx.upsert_step(step); !s) return s;
    if (work.duplicate && !current->duplicate_of) {  // the first model to find one names it
      if (auto s = tx.set_duplicate_of(image_id, *work.duplicate); !s) return s;
      current->duplicate_of = work.duplicate;
    }

    auto steps = tx.get_steps(image_id);
    if (!steps) return std::move(steps).error();
    auto find = [&](const std::string& model, const char* name) -> const StepRecord* {
      for (const auto& s : *steps)
        if (s.model == model && s.step == name) return &s;
      return nullptr;
    };
    for (const auto& model : current->models) {
      const StepRecord* s = find(model, "vector_indexing");
      if (!s || s->status != StepStatus::kCompleted) return {};  // other models still running
    }
    auto claimed = tx.claim_completion(image_id, now);
    if (!claimed) return std::move(claimed).error();
    if (!*claimed) return {};  // completion already announced
    ProcessingCompletedEvent done;
    done.envelope = {ctx_.ids.event_id(), now, tenant, correlation};
    done.data.image_id = image_id;
    for (const auto& model : current->models) {
      if (const StepRecord* fx = find(model, "feature_extraction"))
        done.data.processing_steps.push_back({"feature_extraction", "completed", fx->duration_ms.value_or(0), model, std::nullopt});
      if (const StepRecord* vx = find(model, "vector_indexing"))
        done.data.processing_steps.push_back({"vector_indexing", "completed", vx->duration_ms.value_or(0), std::nullopt,
                                              vx->collection_name});
    }
    done.data.total_processing_time_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(now - current->created_at).count();
    done.data.searchable_after = now;
    if (current->duplicate_of)
      done.data.duplicate_of = DuplicateRef{current->duplicate_of->image_id, current->duplicate_of->score,
                                            current->duplicate_of->model};
    log_info("image.completed", {{"tenantId", tenant}, {"imageId", image_id}, {"correlationId", correlation},
                                 {"totalMs", static_cast<long long>(done.data.total_processing_time_ms)}});
    ctx_.metrics.observe("deeplens_upload_to_searchable_seconds", {},
                         static_cast<double>(done.data.total_processing_time_ms) / 1000.0);
    const OutboxMessage msg = to_outbox(done);
    if (auto st = tx.enqueue(msg); !st) return st;
    return tx.queue_webhook(WebhookEvent{done.envelope.tenant_id, std::string(event_types::kProcessingCompleted),
                                         done.envelope.event_id, msg.payload});
  });
  // Deleted between the upsert and this transaction: delete_image removed the image's vectors
  // before ours was there, so take it out here (in the other order delete_image sees it).
  if (committed && image_gone && image)
    if (VectorIndex* index = ctx_.vectors.find_collection(collection))
      if (auto st = index->remove(image_id); !st)
        log_warn("index.cleanup_failed", {{"imageId", image_id}, {"error", st.error().to_string()}});
  return committed;
}

// ------------------------------------------------------------------------------------------------
// NotifyStage

void NotifyStage::add_listener(ImageEventListener* listener) {
  std::lock_guard lock(mu_);
  listeners_.push_back(listener);
}

size_t NotifyStage::handle(std::span<const BusMessage> batch) {
  std::vector<ImageEventListener*> listeners;
  {
    std::lock_guard lock(mu_);
    listeners = listeners_;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto& msg = batch[i];
    if (msg.topic == topics::kProcessingCompleted) {
      auto e = decode_processing_completed(msg.payload);
      if (!e) {
        if (!dead_letter_undecodable(ctx_, msg, "notification", e.error())) return i;
        continue;
      }
      ctx_.metrics.add("deeplens_images_completed_total", {});
      for (auto* l : listeners) l->on_completed(*e);
    } else {
      auto e = decode_processing_failed(msg.payload);
      if (!e) {
        if (!dead_letter_undecodable(ctx_, msg, "notification", e.error())) return i;
        continue;
      }
      const bool final = is_final_failure(*e);
      ctx_.metrics.add("deeplens_stage_failures_seen_total", {{"stage", e->data.stage}, {"final", final ? "true" : "false"}});
      for (auto* l : listeners) l->on_failed(*e, final);
    }
  }
  return batch.size();
}

// ------------------------------------------------------------------------------------------------
// RetryStage

size_t RetryStage::handle(std::span<const BusMessage> batch) {
  for (size_t i = 0; i < batch.size(); ++i) {
    if (auto st = handle_one(batch[i]); !st) {
      log_warn("stage.retry_later", {{"stage", "retry"}, {"error", st.error().to_string()}});
      return i;
    }
  }
  return batch.size();
}

Status RetryStage::handle_one(const BusMessage& msg) {
  auto decoded = decode_processing_failed(msg.payload);
  if (!decoded) return dead_letter_undecodable(ctx_, msg, "retry", decoded.error());
  const auto& f = *decoded;
  bool scheduled = false;
  auto st = ctx_.store.transact([&](MetadataTx& tx) -> Status {
    auto processed = tx.is_processed(groups::kRetry, f.envelope.event_id);
    if (!processed) return std::move(processed).error();
    if (*processed) return {};
    if (auto s = tx.mark_processed(groups::kRetry, f.envelope.event_id); !s) return s;
    const Timestamp now = ctx_.clock.now();
    if (!is_final_failure(f)) {
      auto original = decode_any(f.data.original_event_json);
      if (original) {
        AnyEvent next = with_attempt(*original, f.data.attempt + 1, ctx_.options.retry, ctx_.ids.event_id(), now);
        ctx_.metrics.add("deeplens_retries_total", {{"stage", f.data.stage}});
        log_info("retry.scheduled", {{"tenantId", f.envelope.tenant_id}, {"imageId", f.data.image_id},
                                     {"stage", f.data.stage}, {"attempt", f.data.attempt + 1}});
        scheduled = true;
        return tx.schedule_retry(f.data.next_attempt_at.value_or(now), to_outbox(next));
      }
    }
    // Final: keep the full original event where an operator can see and replay it.
    DeadLetter d;
    d.topic = f.data.original_topic;
    d.key = f.data.image_id;
    d.payload = f.data.original_event_json;
    d.stage = f.data.stage;
    d.error_code = f.data.error_code;
    d.error_message = f.data.error_message;
    d.image_id = f.data.image_id;
    d.tenant_id = f.envelope.tenant_id;
    d.attempts = f.data.attempt;
    if (auto s = tx.add_dead_letter(d); !s) return s;
    const std::string step_name = step_for_stage(f.data.stage);
    if (!step_name.empty() && f.data.model_name) {
      auto steps = tx.get_steps(f.data.image_id);
      if (!steps) return std::move(steps).error();
      StepRecord step;
      step.image_id = f.data.image_id;
      step.model = *f.data.model_name;
      step.step = step_name;
      for (const auto& s : *steps)
        if (s.model == step.model && s.step == step_name) step = s;
      step.status = StepStatus::kFailed;
      step.attempts = std::max(step.attempts, f.data.attempt);
      step.last_error = f.data.error_code + ": " + f.data.error_message;
      if (auto s = tx.upsert_step(step); !s) return s;
    }
    auto image = tx.get_image(f.data.image_id);
    if (!image) return image.error().code == ErrorCode::kNotFound ? Status() : Status(std::move(image).error());
    ctx_.metrics.add("deeplens_dead_letters_total", {{"stage", f.data.stage}, {"reason", "failed"}});
    log_error("image.failed", {{"tenantId", f.envelope.tenant_id}, {"imageId", f.data.image_id},
                               {"stage", f.data.stage}, {"code", f.data.error_code}, {"attempts", f.data.attempt}});
    return tx.set_image_status(f.data.image_id, ImageStatus::kFailed, f.data.error_code, f.data.error_message);
  });
  if (st && scheduled) {
    std::lock_guard lock(mu_);
    kicked_ = true;
    cv_.notify_all();
  }
  return st;
}

void RetryStage::start() {
  std::lock_guard lock(mu_);
  if (scheduler_.joinable()) return;
  stopping_ = false;
  scheduler_ = std::thread([this] { run_scheduler(); });
}

void RetryStage::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (scheduler_.joinable()) scheduler_.join();
}

void RetryStage::run_scheduler() {
  auto last_trim = std::chrono::steady_clock::now();
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      kicked_ = false;
    }
    auto moved = ctx_.store.release_due_retries(ctx_.clock.now(), 100);
    if (!moved) log_warn("retry.release_failed", {{"error", moved.error().to_string()}});
    else if (*moved == 100) continue;
    if (std::chrono::steady_clock::now() - last_trim > std::chrono::minutes(10)) {
      last_trim = std::chrono::steady_clock::now();
      (void)ctx_.store.trim_processed(ctx_.clock.now() - ctx_.options.processed_ttl);
    }
    auto wait = std::chrono::milliseconds(1000);
    if (auto next = ctx_.store.next_retry_due(); next && *next) {
      const auto until = std::chrono::duration_cast<std::chrono::milliseconds>(**next - ctx_.clock.now());
      wait = std::clamp(until, std::chrono::milliseconds(0), wait);
    }
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, wait, [&] { return stopping_ || kicked_; });
  }
}

}  // namespace deeplens
