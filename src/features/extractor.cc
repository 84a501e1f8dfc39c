#include "features/extractor.h"

#include <cmath>

namespace deeplens {

void l2_normalize(std::span<float> v) {
  double sum = 0.0;  // double: 1000+ squares of small floats lose bits in float
  for (float x : v) sum += static_cast<double>(x) * x;
  if (!(sum > 0.0) || !std::isfinite(sum)) return;  // zero stays zero; NaN/inf are not ours to hide
  const float scale = static_cast<float>(1.0 / std::sqrt(sum));
  for (float& x : v) x *= scale;
}

}  // namespace deeplens
