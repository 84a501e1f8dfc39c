// An Extractor that delegates to an HTTP feature-extraction service (the spec's Python service):
//
//   POST {url}/extract-features
//   Content-Type: application/json
//   {"imageId": "img_...", "modelName": "resnet50", "image": "<base64 of the original file>",
//    "normalize": true}
//   -> 200 {"features": [0.12, ...], "processingTimeMs": 38, "modelVersion": "v2.7"}
//
// The service gets the original encoded bytes (ModelInfo::input_width/height are 0), one request
// per image. The answer must hold exactly `dimension` finite numbers; with `normalize` the vector
// is L2-normalised here as well (a no-op when the service already did it). "processingTimeMs" and
// "modelVersion" are optional and not used: events carry the configured `version`.
//
// Errors name the model, the URL and the input: kUnavailable for a refused connection, a 5xx,
// 408 or 429 (retrying later may work), kTimeout when timeout_ms passes, kInvalidArgument for
// other 4xx (the service rejected this image), kInternal for an answer that breaks the contract
// (not JSON, no "features", wrong dimension, non-numbers).
//
// Thread-safety: extract() may be called from any number of threads (one HttpClient; its pooled
// handles keep connections alive).
#pragma once

#include <memory>

#include "common/result.h"
#include "features/extractor.h"
#include "features/model_spec.h"

namespace deeplens {

// Checks the spec (kind "remote", url, dimension); does not contact the service (it may start
// after us).
Result<std::unique_ptr<Extractor>> make_remote_extractor(const ModelSpec& spec);

}  // namespace deeplens
