// Shared helpers for the feature-extraction integration tests: where the real models and photos
// are, reading files, decoding photos through the imaging module, vector maths, temp dirs, and
// running Debian's python3 for generated fixtures. Test-only.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "features/extractor.h"
#include <cstdio>
#include <cstdlib>

#include "imaging/image.h"
#include "support/child_process.h"

namespace deeplens::testing {

namespace fs = std::filesystem;

// The pretrained models: DEEPLENS_TEST_MODELS, else ../shared/models beside the repository (never
// copied into it). When the folder is missing, says once how to point at it or leave these tests out.
inline fs::path models_dir() {
  static const fs::path dir = [] {
    const char* env = std::getenv("DEEPLENS_TEST_MODELS");
    fs::path d = env && *env ? fs::path(env) : fs::path(DEEPLENS_SOURCE_DIR) / ".." / "shared" / "models";
    if (!fs::is_directory(d))
      std::fprintf(stderr,
                   "models directory %s is missing: set DEEPLENS_TEST_MODELS=DIR, or leave the model tests out with "
                   "ctest -LE models (scripts/test -LE models)\n",
                   d.c_str());
    return d;
  }();
  return dir;
}
inline fs::path skimage_data() { return "/usr/lib/python3/dist-packages/skimage/data"; }
inline fs::path opencv_data() { return "/usr/share/doc/opencv-doc/examples/data"; }
inline const char* debian_python() { return "/usr/bin/python3"; }

inline std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

inline std::vector<std::string> read_lines(const fs::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Decodes a photo exactly as the pipeline does (imaging/decode_for_model).
inline DecodedImage decode_photo(const std::vector<uint8_t>& bytes, int width, int height) {
  static const bool initialised = init_imaging().ok();
  EXPECT_TRUE(initialised);
  auto img = decode_for_model(bytes, width, height, ImageLimits{});
  EXPECT_TRUE(img.ok()) << img.error().to_string();
  return img.ok() ? std::move(*img) : DecodedImage{};
}
inline DecodedImage decode_photo(const fs::path& path, int width, int height) {
  return decode_photo(read_bytes(path), width, height);
}

inline double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}
inline double norm(const std::vector<float>& a) { return std::sqrt(dot(a, a)); }
inline double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  return dot(a, b) / (norm(a) * norm(b) + 1e-12);
}
inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = a.size() == b.size() ? 0.0 : INFINITY;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

// A fresh directory under /tmp, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() /
            ("deeplens-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Runs /usr/bin/python3 with args to completion; its exit code (-1 if it could not run or took
// longer than the timeout).
inline int run_python(const std::vector<std::string>& args,
                      std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
  std::vector<std::string> argv{debian_python()};
  argv.insert(argv.end(), args.begin(), args.end());
  ChildProcess child;
  std::string error;
  if (!child.start(argv, &error)) {
    ADD_FAILURE() << error;
    return -1;
  }
  return child.wait_exit(timeout);
}

// Times f() in milliseconds.
template <typename F>
double time_ms(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace deeplens::testing
