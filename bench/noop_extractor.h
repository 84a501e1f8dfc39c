// The benchmarks' no-op model: no decoding (input size 0x0, so the pipeline does not decode) and a
// unit vector derived from the image id, so every image gets its own point in the index.
// Bench-only code.
#pragma once

#include <functional>
#include <string_view>

#include "features/extractor.h"

namespace deeplens::bench {

class NoopExtractor final : public Extractor {
 public:
  explicit NoopExtractor(int dimension = 1280) { info_ = ModelInfo{"noop", "1.0", dimension, 0, 0, true}; }
  const ModelInfo& info() const override { return info_; }
  Result<std::vector<std::vector<float>>> extract(std::span<const ExtractorInput> batch) override {
    std::vector<std::vector<float>> out;
    for (const auto& in : batch) {
      std::vector<float> v(static_cast<size_t>(info_.dimension));
      uint64_t h = std::hash<std::string_view>{}(in.image_id);
      for (auto& x : v) {
        h = h * 6364136223846793005ull + 1442695040888963407ull;
        x = static_cast<float>(static_cast<int64_t>(h >> 33) % 1000) / 1000.0f;
      }
      l2_normalize(v);
      out.push_back(std::move(v));
    }
    return out;
  }

 private:
  ModelInfo info_;
};

}  // namespace deeplens::bench
