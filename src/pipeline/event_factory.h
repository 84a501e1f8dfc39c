// Building the pipeline's events and their bus envelopes (topic, key = imageId, headers eventType,
// eventVersion, correlationId, tenantId). Pure functions.
#pragma once

#include <string>

#include "events/events.h"
#include "store/metadata_store.h"

namespace deeplens {

OutboxMessage to_outbox(const ImageUploadedEvent& e);
OutboxMessage to_outbox(const FeatureExtractionRequestedEvent& e);
OutboxMessage to_outbox(const VectorIndexingRequestedEvent& e);
OutboxMessage to_outbox(const ProcessingCompletedEvent& e);
OutboxMessage to_outbox(const ProcessingFailedEvent& e);
OutboxMessage to_outbox(const AnyEvent& e);

// The topic an event type is published to.
std::string topic_for(const AnyEvent& e);

// A copy of a request event for another attempt: new eventId and timestamp, same correlationId,
// retryPolicy.currentAttempt = attempt (VectorIndexingRequested gains a retryPolicy).
AnyEvent with_attempt(const AnyEvent& e, int attempt, const RetryPolicy& defaults, std::string new_event_id,
                      Timestamp now);

}  // namespace deeplens
