#include "features/dnn/dnn_extractor.h"

#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include "common/log.h"

namespace deeplens {
namespace {

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out;
}

// Synthetic images for the load-time checks: deterministic, different from each other, and
// busy enough that a model cannot map both to the same vector.
DecodedImage probe_image(int width, int height, int seed) {
  DecodedImage img;
  img.width = width;
  img.height = height;
  img.rgb.resize(static_cast<size_t>(width) * height * 3);
  size_t i = 0;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      img.rgb[i++] = static_cast<uint8_t>((x * (3 + seed) + y) & 0xff);
      img.rgb[i++] = static_cast<uint8_t>((y * (5 + seed) + x * seed) & 0xff);
      img.rgb[i++] = static_cast<uint8_t>(((x ^ y) * (1 + seed)) & 0xff);
    }
  }
  return img;
}

// Relative L2 distance of two vectors, for "batched == single" comparisons.
double relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0.0;
  double norm = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    norm += static_cast<double>(a[i]) * a[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-12);
}

class DnnExtractor final : public Extractor {
 public:
  DnnExtractor(const ModelSpec& spec, cv::dnn::Net net, std::string output_layer)
      : spec_(spec), output_layer_(std::move(output_layer)), net_(std::move(net)) {
    info_.name = spec.name;
    info_.version = spec.version;
    info_.dimension = spec.dimension;
    info_.input_width = spec.input_width;
    info_.input_height = spec.input_height;
    info_.normalize = spec.normalize;
    info_.batches = true;
    max_batch_ = spec.batch_size;
  }

  const ModelInfo& info() const override { return info_; }

  Result<std::vector<std::vector<float>>> extract(std::span<const ExtractorInput> batch) override {
    for (size_t i = 0; i < batch.size(); ++i) {
      if (auto st = check_input(batch[i], i); !st) return std::move(st).error();
    }
    std::vector<std::vector<float>> out;
    out.reserve(batch.size());
    for (size_t first = 0; first < batch.size(); first += static_cast<size_t>(max_batch_)) {
      const size_t n = std::min(batch.size() - first, static_cast<size_t>(max_batch_));
      auto chunk = run(batch.subspan(first, n));
      if (!chunk.ok()) return std::move(chunk).error().with("first_input", std::to_string(first));
      for (auto& v : *chunk) out.push_back(std::move(v));
    }
    return out;
  }

  // Load-time checks (see the header). Runs before the extractor is shared.
  Status self_check() {
    const DecodedImage a = probe_image(spec_.input_width, spec_.input_height, 1);
    const DecodedImage b = probe_image(spec_.input_width, spec_.input_height, 2);
    const ExtractorInput inputs[2] = {{&a, {}, "probe-a"}, {&b, {}, "probe-b"}};

    auto single_a = run(std::span(inputs, 1));
    if (!single_a.ok()) return std::move(single_a).error();
    if (spec_.batch_size == 1) return ok_status();

    auto single_b = run(std::span(inputs + 1, 1));
    if (!single_b.ok()) return std::move(single_b).error();
    auto pair = run(std::span(inputs, 2));
    const bool batches =
        pair.ok() && relative_difference((*pair)[0], (*single_a)[0]) < 1e-3 &&
        relative_difference((*pair)[1], (*single_b)[0]) < 1e-3;
    if (!batches) {
      max_batch_ = 1;
      log_warn("model.no_batching",
               {{"model", spec_.name},
                {"file", spec_.file},
                {"detail", pair.ok() ? std::string("batched output differs from single-image output")
                                     : pair.error().message},
                {"effect", "one image per forward"}});
    }
    return ok_status();
  }

  int max_batch() const { return max_batch_; }

 private:
  Status check_input(const ExtractorInput& input, size_t index) const {
    auto fail = [&](const std::string& why) {
      return Error(ErrorCode::kInvalidArgument, "model '" + spec_.name + "', input " +
                                                    std::to_string(index) + ": " + why)
          .with("model", spec_.name)
          .with("input", std::to_string(index))
          .with("image_id", std::string(input.image_id));
    };
    const DecodedImage* px = input.pixels;
    if (!px) return fail("no decoded pixels (this model takes pixels, not encoded bytes)");
    if (px->width != spec_.input_width || px->height != spec_.input_height)
      return fail("pixels are " + std::to_string(px->width) + "x" + std::to_string(px->height) +
                  ", the model takes " + std::to_string(spec_.input_width) + "x" +
                  std::to_string(spec_.input_height) + " (decode with info().input_width/height)");
    if (px->rgb.size() != static_cast<size_t>(px->width) * px->height * 3)
      return fail("pixel buffer holds " + std::to_string(px->rgb.size()) + " bytes, expected width*height*3");
    return ok_status();
  }

  // One forward over inputs already checked; inputs.size() <= max_batch_.
  Result<std::vector<std::vector<float>>> run(std::span<const ExtractorInput> inputs) {
    const int n = static_cast<int>(inputs.size());
    const size_t dim = static_cast<size_t>(spec_.dimension);
    std::vector<std::vector<float>> out;
    try {
      std::vector<cv::Mat> images;
      images.reserve(inputs.size());
      for (const auto& in : inputs) {
        // blobFromImages only reads its inputs; the header does not copy the pixels.
        images.emplace_back(in.pixels->height, in.pixels->width, CV_8UC3,
                            const_cast<uint8_t*>(in.pixels->rgb.data()));
      }
      cv::Mat blob = cv::dnn::blobFromImages(
          images, spec_.scale, cv::Size(spec_.input_width, spec_.input_height),
          cv::Scalar(spec_.mean[0], spec_.mean[1], spec_.mean[2]), spec_.swap_rb(), false, CV_32F);
      if (spec_.std[0] != 1.0 || spec_.std[1] != 1.0 || spec_.std[2] != 1.0) {
        const size_t plane = static_cast<size_t>(spec_.input_width) * spec_.input_height;
        for (int i = 0; i < n; ++i) {
          for (int c = 0; c < 3; ++c) {
            float* p = blob.ptr<float>(i, c);
            const float inv = static_cast<float>(1.0 / spec_.std[static_cast<size_t>(c)]);
            for (size_t k = 0; k < plane; ++k) p[k] *= inv;
          }
        }
      }

      std::lock_guard lock(forward_mu_);
      net_.setInput(blob);
      std::vector<cv::Mat> outputs;
      net_.forward(outputs, std::vector<cv::String>{output_layer_});
      if (outputs.size() != 1)
        return Error(ErrorCode::kInternal, "model '" + spec_.name + "': forward returned " +
                                               std::to_string(outputs.size()) + " outputs, expected 1")
            .with("model", spec_.name);
      const cv::Mat& result = outputs[0];
      if (result.depth() != CV_32F)
        return Error(ErrorCode::kInternal, "model '" + spec_.name + "': output '" + output_layer_ +
                                               "' is not float32")
            .with("model", spec_.name);
      const size_t total = result.total();
      if (result.dims < 1 || result.size[0] != n || total != static_cast<size_t>(n) * dim) {
        std::string shape;
        for (int d = 0; d < result.dims; ++d) shape += (d ? "x" : "") + std::to_string(result.size[d]);
        return Error(ErrorCode::kInvalidArgument,
                     "model '" + spec_.name + "': output '" + output_layer_ + "' has shape " + shape +
                         " for a batch of " + std::to_string(n) + ", expected " + std::to_string(n) +
                         " x " + std::to_string(dim) + " (check `dimension` and `output_layer`)")
            .with("model", spec_.name)
            .with("shape", shape);
      }
      const cv::Mat flat = result.isContinuous() ? result : result.clone();
      const float* data = flat.ptr<float>();
      out.reserve(inputs.size());
      for (int i = 0; i < n; ++i) out.emplace_back(data + i * dim, data + (i + 1) * dim);
    } catch (const cv::Exception& e) {
      return Error(ErrorCode::kInternal, "model '" + spec_.name + "': OpenCV forward failed: " + e.what())
          .with("model", spec_.name);
    }
    for (size_t i = 0; i < out.size(); ++i) {
      auto& v = out[i];
      if (!std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); }))
        return Error(ErrorCode::kInternal, "model '" + spec_.name + "' produced a non-finite value")
            .with("model", spec_.name)
            .with("image_id", std::string(inputs[i].image_id));
      if (spec_.normalize) l2_normalize(v);
    }
    return out;
  }

  const ModelSpec spec_;
  const std::string output_layer_;
  ModelInfo info_;
  int max_batch_ = 1;  // set at construction and by self_check(), read-only afterwards

  std::mutex forward_mu_;
  cv::dnn::Net net_;  // guarded by forward_mu_
};

}  // namespace

Result<std::unique_ptr<Extractor>> make_dnn_extractor(const ModelSpec& spec) {
  auto fail = [&](ErrorCode code, const std::string& why) {
    return Error(code, "model '" + spec.name + "': " + why).with("model", spec.name).with("file", spec.file);
  };
  if (spec.kind != ModelKind::kDnn)
    return fail(ErrorCode::kInvalidArgument, std::string("make_dnn_extractor needs kind = \"dnn\", got \"") +
                                                 model_kind_name(spec.kind) + "\"");
  if (spec.dimension <= 0) return fail(ErrorCode::kInvalidArgument, "dimension must be set");
  for (const std::string* path : {&spec.file, &spec.config_file}) {
    if (path->empty() && path == &spec.config_file) continue;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(*path, ec))
      return fail(ErrorCode::kNotFound, "model file '" + *path +
                                            "' does not exist or is not a file (check `file`/`config_file`)")
          .with("path", *path);
  }

  const auto started = std::chrono::steady_clock::now();
  if (spec.threads > 0) cv::setNumThreads(spec.threads);  // process-wide (model_spec.h)

  cv::dnn::Net net;
  std::string output_layer = spec.output_layer;
  try {
    net = cv::dnn::readNet(spec.file, spec.config_file);
    if (net.empty()) return fail(ErrorCode::kInvalidArgument, "OpenCV loaded an empty network from '" + spec.file + "'");
    net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
    std::vector<std::string> outputs;
    for (const auto& s : net.getUnconnectedOutLayersNames()) outputs.emplace_back(s);
    if (output_layer.empty()) {
      if (outputs.size() != 1)
        return fail(ErrorCode::kInvalidArgument,
                    "the model has " + std::to_string(outputs.size()) + " outputs (" + join(outputs) +
                        "); set `output_layer` to the one that gives the vector");
      output_layer = outputs[0];
    } else if (net.getLayerId(output_layer) < 0) {
      return fail(ErrorCode::kInvalidArgument, "output_layer '" + output_layer +
                                                   "' is not a layer of the model (its outputs: " +
                                                   join(outputs) + ")");
    }
  } catch (const cv::Exception& e) {
    return fail(ErrorCode::kInvalidArgument,
                "OpenCV cannot load '" + spec.file + "' (is it a model file of a supported format?): " + e.what());
  }
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();

  auto extractor = std::make_unique<DnnExtractor>(spec, std::move(net), output_layer);
  if (auto st = extractor->self_check(); !st) {
    Error e = std::move(st).error();
    e.message += " (load-time check)";
    return std::move(e).with("file", spec.file);
  }
  const double ready_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  log_info("model.loaded", {{"model", spec.name},
                            {"kind", "dnn"},
                            {"file", spec.file},
                            {"output_layer", output_layer},
                            {"dimension", spec.dimension},
                            {"batch", extractor->max_batch()},
                            {"load_ms", load_ms},
                            {"ready_ms", ready_ms}});
  return std::unique_ptr<Extractor>(std::move(extractor));
}

}  // namespace deeplens
