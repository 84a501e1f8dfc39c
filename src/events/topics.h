// The five topics of the pipeline (spec, "Topic Structure"), their priority lanes, and the event
// types they carry.
// The one place these names are spelled.
#pragma once

#include <array>
#include <string_view>

namespace deeplens::topics {

inline constexpr std::string_view kImagesUploaded = "deeplens.images.uploaded";
inline constexpr std::string_view kFeaturesExtraction = "deeplens.features.extraction";
inline constexpr std::string_view kVectorsIndexing = "deeplens.vectors.indexing";
inline constexpr std::string_view kProcessingCompleted = "deeplens.processing.completed";
inline constexpr std::string_view kProcessingFailed = "deeplens.processing.failed";

// The lanes of the two stages where images wait (events/priority.h): the spec's name is the
// normal lane.
inline constexpr std::string_view kImagesUploadedHigh = "deeplens.images.uploaded.high";
inline constexpr std::string_view kImagesUploadedLow = "deeplens.images.uploaded.low";
inline constexpr std::string_view kFeaturesExtractionHigh = "deeplens.features.extraction.high";
inline constexpr std::string_view kFeaturesExtractionLow = "deeplens.features.extraction.low";

// Every topic, in pipeline order (a lane beside its spec topic).
inline constexpr std::array<std::string_view, 9> kAll = {
    kImagesUploadedHigh,     kImagesUploaded,       kImagesUploadedLow,
    kFeaturesExtractionHigh, kFeaturesExtraction,   kFeaturesExtractionLow,
    kVectorsIndexing,        kProcessingCompleted,  kProcessingFailed};

}  // namespace deeplens::topics

namespace deeplens::event_types {

inline constexpr std::string_view kImageUploaded = "image.uploaded";
inline constexpr std::string_view kFeatureExtractionRequested = "feature.extraction.requested";
inline constexpr std::string_view kVectorIndexingRequested = "vector.indexing.requested";
inline constexpr std::string_view kProcessingCompleted = "processing.completed";
inline constexpr std::string_view kProcessingFailed = "processing.failed";

// The version every event we write carries; decoders accept any 1.x.
inline constexpr std::string_view kEventVersion = "1.0";

}  // namespace deeplens::event_types
