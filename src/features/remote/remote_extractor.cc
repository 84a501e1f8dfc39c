#include "features/remote/remote_extractor.h"

#include <algorithm>
#include <cmath>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/base64.h"
#include "common/http_client.h"

namespace deeplens {
namespace {

constexpr size_t kMaxErrorBody = 300;  // bytes of a failed answer quoted in the error

class RemoteExtractor final : public Extractor {
 public:
  explicit RemoteExtractor(const ModelSpec& spec) : spec_(spec), endpoint_(spec.url + "/extract-features") {
    info_.name = spec.name;
    info_.version = spec.version;
    info_.dimension = spec.dimension;
    info_.batches = true;
    info_.input_width = 0;  // the service takes the original encoded bytes
    info_.input_height = 0;
    info_.normalize = spec.normalize;
  }

  const ModelInfo& info() const override { return info_; }

  Result<std::vector<std::vector<float>>> extract(std::span<const ExtractorInput> batch) override {
    std::vector<std::vector<float>> out;
    out.reserve(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      auto v = extract_one(batch[i], i);
      if (!v.ok()) return std::move(v).error();
      out.push_back(std::move(*v));
    }
    return out;
  }

 private:
  Error error(ErrorCode code, const std::string& why, const ExtractorInput& input, size_t index) const {
    return Error(code, "model '" + spec_.name + "' (remote " + endpoint_ + "), input " +
                           std::to_string(index) + ": " + why)
        .with("model", spec_.name)
        .with("url", endpoint_)
        .with("input", std::to_string(index))
        .with("image_id", std::string(input.image_id));
  }

  Result<std::vector<float>> extract_one(const ExtractorInput& input, size_t index) {
    if (input.encoded.empty())
      return error(ErrorCode::kInvalidArgument, "no encoded image bytes (a remote model takes the original file)",
                   input, index);

    const nlohmann::json request = {{"imageId", std::string(input.image_id)},
                                    {"modelName", spec_.name},
                                    {"image", base64_encode(input.encoded)},
                                    {"normalize", spec_.normalize}};
    const std::string body = request.dump();

    ClientRequest http;
    http.method = "POST";
    http.url = endpoint_;
    http.headers = {{"Content-Type", "application/json"}, {"Accept", "application/json"}};
    http.body = body;
    http.timeout = std::chrono::milliseconds(spec_.timeout_ms);
    http.connect_timeout = http.timeout;
    // A vector of `dimension` numbers at ~25 characters each, plus room for the other fields.
    http.max_body = static_cast<size_t>(spec_.dimension) * 32 + (1 << 20);
    auto answered = client_.perform(http);
    if (!answered) {
      const Error& e = answered.error();
      if (e.code == ErrorCode::kTimeout)
        return error(ErrorCode::kTimeout, "no answer within timeout_ms = " + std::to_string(spec_.timeout_ms) + " (" + e.message + ")",
                     input, index)
            .with("timeout_ms", std::to_string(spec_.timeout_ms));
      if (e.code == ErrorCode::kResourceExhausted) return error(ErrorCode::kInternal, e.message, input, index);
      return error(ErrorCode::kUnavailable, e.message + "; is the service running at `url`?", input, index);
    }
    const ClientResponse& response = *answered;
    const long status = response.status;

    if (status < 200 || status > 299) {
      const ErrorCode code = (status >= 500 || status == 408 || status == 429) ? ErrorCode::kUnavailable
                                                                               : ErrorCode::kInvalidArgument;
      std::string quoted = response.body.substr(0, kMaxErrorBody);
      if (response.body.size() > kMaxErrorBody) quoted += "...";
      return error(code, "HTTP " + std::to_string(status) + ": " + quoted, input, index)
          .with("http_status", std::to_string(status));
    }

    const auto answer = nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
    if (answer.is_discarded() || !answer.is_object())
      return error(ErrorCode::kInternal, "answer is not a JSON object: " + response.body.substr(0, kMaxErrorBody),
                   input, index);
    const auto it = answer.find("features");
    if (it == answer.end() || !it->is_array())
      return error(ErrorCode::kInternal, "answer has no \"features\" array", input, index);
    if (it->size() != static_cast<size_t>(spec_.dimension))
      return error(ErrorCode::kInternal,
                   "answer has " + std::to_string(it->size()) + " features, the model's dimension is " +
                       std::to_string(spec_.dimension) + " (check `dimension`)",
                   input, index)
          .with("dimension", std::to_string(it->size()));
    std::vector<float> v;
    v.reserve(it->size());
    for (const auto& x : *it) {
      if (!x.is_number())
        return error(ErrorCode::kInternal, "\"features\" holds a non-number: " + x.dump(), input, index);
      const double d = x.get<double>();
      if (!std::isfinite(d) || std::fabs(d) > 3.4e38)
        return error(ErrorCode::kInternal, "\"features\" holds a non-finite value", input, index);
      v.push_back(static_cast<float>(d));
    }
    if (spec_.normalize) l2_normalize(v);
    return v;
  }

  const ModelSpec spec_;
  const std::string endpoint_;
  ModelInfo info_;

  HttpClient client_;
};

}  // namespace

Result<std::unique_ptr<Extractor>> make_remote_extractor(const ModelSpec& spec) {
  if (spec.kind != ModelKind::kRemote)
    return Error(ErrorCode::kInvalidArgument, "model '" + spec.name +
                                                  "': make_remote_extractor needs kind = \"remote\"")
        .with("model", spec.name);
  if (spec.dimension <= 0 || spec.url.empty() || spec.timeout_ms <= 0)
    return Error(ErrorCode::kInvalidArgument,
                 "model '" + spec.name + "': a remote model needs url, dimension and timeout_ms")
        .with("model", spec.name);
  return std::unique_ptr<Extractor>(std::make_unique<RemoteExtractor>(spec));
}

}  // namespace deeplens
