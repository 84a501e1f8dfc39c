// The vectors the crash test writes: a pure function of the id number, so the parent can check
// what the child acknowledged without any channel but the ids.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace deeplens::crash_test {

constexpr size_t kDimension = 512;
constexpr const char* kCollection = "tenant_crashtest_model_vectors";

inline std::vector<float> vector_for(uint64_t n) {
  std::mt19937_64 rng(n * 7919 + 17);
  std::normal_distribution<float> g(0, 1);
  std::vector<float> v(kDimension);
  for (auto& x : v) x = g(rng);
  return v;
}

inline std::string id_for(uint64_t n) { return "img_" + std::to_string(n); }

}  // namespace deeplens::crash_test
