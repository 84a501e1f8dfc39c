// Extractor: turns images into feature vectors (CNN embeddings or a built-in descriptor).
// One Extractor is one model at one version with a fixed output dimension.
//
// Thread-safety: extract() may be called from several threads at once; an implementation that
// cannot run concurrently (an OpenCV DNN net) serialises internally.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace deeplens {

// Pixels prepared for a model: 8-bit sRGB, 3 channels interleaved R,G,B, row-major, no padding,
// EXIF orientation applied and alpha flattened. Produced by imaging/ at the size the model asks for.
struct DecodedImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // width * height * 3 bytes
};

struct ModelInfo {
  std::string name;     // the name requests use, e.g. "mobilenet_v2", "builtin"
  std::string version;  // e.g. "1.0"; carried in events as modelVersion
  int dimension = 0;    // length of every vector this model returns
  // The pixel size extract() wants in DecodedImage (the caller decodes to exactly this size,
  // aspect ratio not preserved unless the model says otherwise). 0x0: the model takes the original
  // encoded bytes instead (a remote service) and DecodedImage may be empty.
  int input_width = 0;
  int input_height = 0;
  bool normalize = true;  // vectors are L2-normalised (cosine similarity == dot product)
  // extract() of several images costs much less than one call each (one network forward, one
  // request to a service): single-image callers gain from sharing calls (QueryBatcher).
  bool batches = false;
};

// One image to extract: the decoded pixels (when the model wants pixels) and the original bytes.
struct ExtractorInput {
  const DecodedImage* pixels = nullptr;
  std::string_view encoded;  // the stored file's bytes; may be empty when pixels are given
  std::string_view image_id; // for logs and remote services
};

class Extractor {
 public:
  virtual ~Extractor() = default;
  virtual const ModelInfo& info() const = 0;
  // One vector of info().dimension floats per input, in input order. A failure fails the whole
  // batch (callers retry per image); errors say which input and why.
  virtual Result<std::vector<std::vector<float>>> extract(std::span<const ExtractorInput> batch) = 0;
};

// Scales v to unit L2 norm in place; a zero vector stays zero.
void l2_normalize(std::span<float> v);

}  // namespace deeplens
