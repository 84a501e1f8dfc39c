#include "features/remote/remote_extractor.h"

#include <curl/curl.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/base64.h"

namespace deeplens {
namespace {

constexpr size_t kMaxErrorBody = 300;  // bytes of a failed answer quoted in the error

struct ResponseBuffer {
  std::string body;
  size_t limit = 0;
  bool overflow = false;
};

size_t write_body(char* data, size_t size, size_t count, void* user) {
  auto* buffer = static_cast<ResponseBuffer*>(user);
  const size_t n = size * count;
  if (buffer->body.size() + n > buffer->limit) {
    buffer->overflow = true;
    return 0;  // makes curl fail with CURLE_WRITE_ERROR
  }
  buffer->body.append(data, n);
  return n;
}

void init_curl_once() {
  static std::once_flag once;
  // Never cleaned up: libcurl's global state lives as long as the process.
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

class RemoteExtractor final : public Extractor {
 public:
  explicit RemoteExtractor(const ModelSpec& spec) : spec_(spec), endpoint_(spec.url + "/extract-features") {
    info_.name = spec.name;
    info_.version = spec.version;
    info_.dimension = spec.dimension;
    info_.input_width = 0;  // the service takes the original encoded bytes
    info_.input_height = 0;
    info_.normalize = spec.normalize;
  }

  ~RemoteExtractor() override {
    for (CURL* h : idle_) curl_easy_cleanup(h);
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

  CURL* take_handle() {
    {
      std::lock_guard lock(idle_mu_);
      if (!idle_.empty()) {
        CURL* h = idle_.back();
        idle_.pop_back();
        return h;
      }
    }
    return curl_easy_init();
  }

  void give_back(CURL* h) {
    std::lock_guard lock(idle_mu_);
    idle_.push_back(h);
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

    CURL* h = take_handle();
    if (!h) return error(ErrorCode::kInternal, "curl_easy_init failed", input, index);
    ResponseBuffer response;
    // A vector of `dimension` numbers at ~25 characters each, plus room for the other fields.
    response.limit = static_cast<size_t>(spec_.dimension) * 32 + (1 << 20);
    char curl_error[CURL_ERROR_SIZE] = {0};
    curl_slist* headers = nullptr;
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Accept: application/json");
    headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip

    curl_easy_reset(h);  // keeps the connection cache
    curl_easy_setopt(h, CURLOPT_URL, endpoint_.c_str());
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(spec_.timeout_ms));
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // required with timeouts in threaded programs
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &write_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &response);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_error);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "deeplens");

    const CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, nullptr);
    curl_slist_free_all(headers);
    give_back(h);

    if (rc != CURLE_OK) {
      const std::string detail = curl_error[0] ? curl_error : curl_easy_strerror(rc);
      if (rc == CURLE_OPERATION_TIMEDOUT)
        return error(ErrorCode::kTimeout,
                     "no answer within timeout_ms = " + std::to_string(spec_.timeout_ms) + " (" + detail + ")",
                     input, index)
            .with("timeout_ms", std::to_string(spec_.timeout_ms));
      if (response.overflow)
        return error(ErrorCode::kInternal,
                     "answer larger than " + std::to_string(response.limit) + " bytes", input, index);
      const bool connect = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
                           rc == CURLE_COULDNT_RESOLVE_PROXY;
      return error(ErrorCode::kUnavailable,
                   std::string(connect ? "cannot connect to the extraction service" : "request failed") +
                       " (" + detail + "); is the service running at `url`?",
                   input, index)
          .with("curl_code", std::to_string(static_cast<int>(rc)));
    }

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

  std::mutex idle_mu_;
  std::vector<CURL*> idle_;  // guarded by idle_mu_
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
  init_curl_once();
  return std::unique_ptr<Extractor>(std::make_unique<RemoteExtractor>(spec));
}

}  // namespace deeplens
