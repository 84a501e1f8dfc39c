// JSON encoding and decoding of the pipeline's events (events.h), exactly as the spec writes them:
// camelCase names, eventVersion "1.0", ISO-8601 UTC timestamps ending in 'Z'.
//
// Decoding is strict about what the pipeline relies on and lenient about the rest:
//  - rejected, with an error whose context "field" names the JSON path (e.g. "data.featureVector[3]"):
//    invalid JSON, a major eventVersion other than 1, a missing required field, a wrong type,
//    an integer outside its field's range (e.g. a width beyond int), a malformed id or timestamp, NaN/Inf or an empty featureVector, a featureVector whose length
//    differs from expectedDimension;
//  - ignored: fields we do not know (forward compatibility within 1.x).
// Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "events/events.h"

namespace deeplens {

std::string encode(const ImageUploadedEvent& e);
std::string encode(const FeatureExtractionRequestedEvent& e);
std::string encode(const VectorIndexingRequestedEvent& e);
std::string encode(const ProcessingCompletedEvent& e);
std::string encode(const ProcessingFailedEvent& e);
std::string encode(const AnyEvent& e);

Result<ImageUploadedEvent> decode_image_uploaded(std::string_view json);
Result<FeatureExtractionRequestedEvent> decode_feature_extraction_requested(std::string_view json);
Result<VectorIndexingRequestedEvent> decode_vector_indexing_requested(std::string_view json);
Result<ProcessingCompletedEvent> decode_processing_completed(std::string_view json);
Result<ProcessingFailedEvent> decode_processing_failed(std::string_view json);

// Dispatches on "eventType".
Result<AnyEvent> decode_any(std::string_view json);

// The eventType / envelope of any event value.
std::string_view event_type(const AnyEvent& e);
const EventEnvelope& envelope(const AnyEvent& e);
// The imageId every event carries (the Kafka key).
const std::string& image_id(const AnyEvent& e);

}  // namespace deeplens
