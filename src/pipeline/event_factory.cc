#include "pipeline/event_factory.h"

#include "events/codec.h"
#include "events/topics.h"

namespace deeplens {
namespace {

OutboxMessage make(std::string topic, std::string_view type, const EventEnvelope& env,
                   const std::string& image_id, std::string payload) {
  OutboxMessage m;
  m.topic = std::move(topic);
  m.key = image_id;
  m.payload = std::move(payload);
  m.headers = {{"eventType", std::string(type)},
               {"eventVersion", std::string(event_types::kEventVersion)},
               {"correlationId", env.correlation_id.value_or(env.event_id)},
               {"tenantId", env.tenant_id}};
  return m;
}

}  // namespace

// Both events travel in the lane of their priority (events/priority.h).
OutboxMessage to_outbox(const ImageUploadedEvent& e) {
  return make(lane_topic(topics::kImagesUploaded, e.processing_options.priority.value_or(Priority::kNormal)),
              event_types::kImageUploaded, e.envelope, e.data.image_id, encode(e));
}
OutboxMessage to_outbox(const FeatureExtractionRequestedEvent& e) {
  return make(lane_topic(topics::kFeaturesExtraction, e.data.priority.value_or(Priority::kNormal)),
              event_types::kFeatureExtractionRequested, e.envelope, e.data.image_id, encode(e));
}
OutboxMessage to_outbox(const VectorIndexingRequestedEvent& e) {
  return make(std::string(topics::kVectorsIndexing), event_types::kVectorIndexingRequested, e.envelope, e.data.image_id, encode(e));
}
OutboxMessage to_outbox(const ProcessingCompletedEvent& e) {
  return make(std::string(topics::kProcessingCompleted), event_types::kProcessingCompleted, e.envelope, e.data.image_id, encode(e));
}
OutboxMessage to_outbox(const ProcessingFailedEvent& e) {
  return make(std::string(topics::kProcessingFailed), event_types::kProcessingFailed, e.envelope, e.data.image_id, encode(e));
}
OutboxMessage to_outbox(const AnyEvent& e) {
  return std::visit([](const auto& ev) { return to_outbox(ev); }, e);
}

std::string topic_for(const AnyEvent& e) { return to_outbox(e).topic; }

AnyEvent with_attempt(const AnyEvent& e, int attempt, const RetryPolicy& defaults, std::string new_event_id,
                      Timestamp now) {
  AnyEvent copy = e;
  std::visit(
      [&](auto& ev) {
        if (!ev.envelope.correlation_id) ev.envelope.correlation_id = ev.envelope.event_id;
        ev.envelope.event_id = new_event_id;
        ev.envelope.timestamp = now;
        using T = std::decay_t<decltype(ev)>;
        if constexpr (std::is_same_v<T, FeatureExtractionRequestedEvent>) {
          ev.retry_policy.current_attempt = attempt;
        } else if constexpr (std::is_same_v<T, VectorIndexingRequestedEvent>) {
          RetryPolicy p = ev.retry_policy.value_or(defaults);
          p.current_attempt = attempt;
          ev.retry_policy = p;
        }
      },
      copy);
  // An ImageUploadedEvent is the root of its correlation chain: it keeps no correlationId of its
  // own beyond the original eventId, which the new copy now carries.
  return copy;
}

}  // namespace deeplens
