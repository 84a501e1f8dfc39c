// The built-in descriptor ("builtin" model): a weight-free, hand-crafted global image descriptor,
// so that a DeepLens with no model files can still index and search. It is made for finding the
// same picture again (resized, re-encoded, slightly cropped, recoloured a little), not for
// semantic similarity: use a CNN model for "pictures of dogs".
//
// The 512 floats concatenate three blocks, each normalised on its own and given an equal share
// of the squared norm, so the cosine is the mean of the blocks' cosines and none dominates:
//   colour (208) - histograms on a 2x2 grid of hue (8, circular) x chroma (2) x value (3), plus 4
//                  grey levels for near-grey pixels;
//   layout (112) - an 8x8 luma thumbnail, 4x4 Cb and Cr thumbnails and 4x4 luma deviations
//                  (where the busy parts are), luma parts mean-centred;
//   edges  (192) - gradient-magnitude weighted histograms of 12 unsigned orientations on a 4x4
//                  grid (HOG-like).
// Binning is soft everywhere (space, hue, chroma, value, orientation), so content moving a little
// moves the vector a little. Histogram counts are raised to 0.75 and each histogram block is
// mean-centred, so unrelated images do not look alike just because histograms are positive.
// On 34 real photos, a 50% resize, a JPEG q70 re-encode and a 90% centre crop all rank their
// original first, by a cosine margin of at least ~0.25 over the closest unrelated photo
// (tests/integration/features/builtin_near_duplicate_test.cc). A horizontal flip is NOT matched.
// Cost: ~0.5 ms per 128x128 image on one core.
//
// Thread-safety: the extractor is stateless after construction; extract() may run concurrently.
#pragma once

#include <memory>
#include <span>

#include "common/result.h"
#include "features/extractor.h"

namespace deeplens {

struct BuiltinDescriptorOptions {
  // Square input size the extractor asks for (ModelInfo::input_width/height); the caller decodes
  // to exactly this. Vectors from different sizes are not comparable.
  int input_size = 128;
};

// Length of every builtin vector.
inline constexpr int kBuiltinDescriptorDimension = 512;

// name "builtin", version "1.0", dimension kBuiltinDescriptorDimension, L2-normalised vectors.
std::unique_ptr<Extractor> make_builtin_descriptor(const BuiltinDescriptorOptions& options = {});

// The descriptor of one image of any size >= 16x16, written to out (kBuiltinDescriptorDimension
// floats, L2-normalised). kInvalidArgument when the pixels are too small or their buffer does not
// hold width*height*3 bytes.
Status compute_builtin_descriptor(const DecodedImage& image, std::span<float> out);

}  // namespace deeplens
