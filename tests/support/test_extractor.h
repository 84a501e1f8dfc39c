// A deterministic Extractor for pipeline tests (behind the module's own interface): the vector is
// derived from the encoded bytes, so the same file always gives the same vector. Faults can be
// injected per image: fail the first N attempts of images whose bytes contain a marker, or all of
// them until fixed.
#pragma once

#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "features/extractor.h"

namespace deeplens::testing {

class TestExtractor final : public Extractor {
 public:
  explicit TestExtractor(std::string name = "test", int dimension = 16, std::chrono::milliseconds delay = {})
      : delay_(delay) {
    info_.name = std::move(name);
    info_.version = "t1";
    info_.dimension = dimension;
    info_.normalize = true;
  }

  const ModelInfo& info() const override { return info_; }

  // Images whose bytes contain `marker` fail their first `times` extractions (-1: always).
  void fail_when(std::string marker, int times) {
    std::lock_guard lock(mu_);
    faults_[std::move(marker)] = times;
  }
  void clear_faults() {
    std::lock_guard lock(mu_);
    faults_.clear();
  }
  int calls() const { return calls_; }

  Result<std::vector<std::vector<float>>> extract(std::span<const ExtractorInput> batch) override {
    if (delay_.count() > 0) std::this_thread::sleep_for(delay_ * static_cast<long>(batch.size()));
    std::vector<std::vector<float>> out;
    for (const auto& in : batch) {
      ++calls_;
      {
        std::lock_guard lock(mu_);
        for (auto& [marker, times] : faults_) {
          if (in.encoded.find(marker) == std::string_view::npos) continue;
          if (times != 0) {
            if (times > 0) --times;
            return Error(ErrorCode::kUnavailable, "injected fault for " + std::string(in.image_id));
          }
        }
      }
      out.push_back(vector_for(in.encoded, info_.dimension));
    }
    return out;
  }

  // Bytes "near-copy-of:<original bytes>" give the original's vector nudged by 5% (cosine about
  // 0.999 to it): a near-duplicate for the near-duplicate check's tests.
  static constexpr std::string_view kNearCopy = "near-copy-of:";

  static std::vector<float> vector_for(std::string_view bytes, int dimension) {
    if (bytes.starts_with(kNearCopy)) {
      std::vector<float> v = vector_for(bytes.substr(kNearCopy.size()), dimension);
      const std::vector<float> nudge = random_unit(bytes, dimension);
      for (size_t i = 0; i < v.size(); ++i) v[i] += 0.05f * nudge[i];
      l2_normalize(v);
      return v;
    }
    return random_unit(bytes, dimension);
  }

 private:
  static std::vector<float> random_unit(std::string_view bytes, int dimension) {
    std::seed_seq seq(bytes.begin(), bytes.end());
    std::mt19937 rng(seq);
    std::normal_distribution<float> dist;
    std::vector<float> v(static_cast<size_t>(dimension));
    for (auto& x : v) x = dist(rng);
    l2_normalize(v);
    return v;
  }

  ModelInfo info_;
  std::chrono::milliseconds delay_;
  std::mutex mu_;
  std::map<std::string, int> faults_;
  std::atomic<int> calls_{0};
};

}  // namespace deeplens::testing
