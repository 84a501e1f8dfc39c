#include "events/codec.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/ids.h"
#include "events/topics.h"

namespace deeplens {

using json = nlohmann::json;
using nlohmann::ordered_json;

namespace {

// ---------------------------------------------------------------------------------------------
// Encoding. ordered_json keeps the spec's field order so that output reads like the spec.

// A float rendered as the shortest decimal that round-trips it, then held as that double, so
// 0.123f is written "0.123" and not "0.12300000339746475".
double float_as_short_double(float f) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, f);
  (void)ec;
  *end = '\0';
  return std::strtod(buf, nullptr);
}

ordered_json envelope_json(const EventEnvelope& e, std::string_view type) {
  ordered_json j;
  j["eventId"] = e.event_id;
  j["eventType"] = type;
  j["eventVersion"] = event_types::kEventVersion;
  j["timestamp"] = format_iso8601(e.timestamp);
  j["tenantId"] = e.tenant_id;
  if (e.correlation_id) j["correlationId"] = *e.correlation_id;
  return j;
}

template <typename T>
void put_opt(ordered_json& j, const char* key, const std::optional<T>& v) {
  if (v) j[key] = *v;
}

ordered_json retry_json(const RetryPolicy& r) {
  return ordered_json{{"maxAttempts", r.max_attempts},
                      {"backoffMs", r.backoff_ms},
                      {"currentAttempt", r.current_attempt}};
}

ordered_json to_json(const ImageUploadedEvent& e) {
  auto j = envelope_json(e.envelope, event_types::kImageUploaded);
  const auto& d = e.data;
  ordered_json data;
  data["imageId"] = d.image_id;
  data["fileName"] = d.file_name;
  data["filePath"] = d.file_path;
  data["fileSize"] = d.file_size;
  data["contentType"] = d.content_type;
  put_opt(data, "uploadedBy", d.uploaded_by);
  ordered_json meta;
  meta["width"] = d.metadata.width;
  meta["height"] = d.metadata.height;
  meta["format"] = d.metadata.format;
  put_opt(meta, "colorProfile", d.metadata.color_profile);
  put_opt(meta, "originalFileName", d.metadata.original_file_name);
  data["metadata"] = std::move(meta);
  ordered_json sp;
  sp["type"] = d.storage_provider.type;
  put_opt(sp, "containerName", d.storage_provider.container_name);
  put_opt(sp, "blobName", d.storage_provider.blob_name);
  data["storageProvider"] = std::move(sp);
  j["data"] = std::move(data);
  ordered_json po;
  po["models"] = e.processing_options.models;
  if (e.processing_options.priority) po["priority"] = priority_name(*e.processing_options.priority);
  put_opt(po, "skipDuplicateCheck", e.processing_options.skip_duplicate_check);
  put_opt(po, "generateThumbnail", e.processing_options.generate_thumbnail);
  j["processingOptions"] = std::move(po);
  return j;
}

ordered_json to_json(const FeatureExtractionRequestedEvent& e) {
  auto j = envelope_json(e.envelope, event_types::kFeatureExtractionRequested);
  const auto& d = e.data;
  ordered_json data;
  data["imageId"] = d.image_id;
  data["imagePath"] = d.image_path;
  data["modelName"] = d.model_name;
  put_opt(data, "modelVersion", d.model_version);
  put_opt(data, "expectedDimension", d.expected_dimension);
  if (d.priority) data["priority"] = priority_name(*d.priority);
  if (d.extraction_options) {
    ordered_json eo = ordered_json::object();
    put_opt(eo, "normalize", d.extraction_options->normalize);
    put_opt(eo, "returnMetadata", d.extraction_options->return_metadata);
    put_opt(eo, "timeout", d.extraction_options->timeout_seconds);
    data["extractionOptions"] = std::move(eo);
  }
  j["data"] = std::move(data);
  j["retryPolicy"] = retry_json(e.retry_policy);
  return j;
}

ordered_json to_json(const VectorIndexingRequestedEvent& e) {
  auto j = envelope_json(e.envelope, event_types::kVectorIndexingRequested);
  const auto& d = e.data;
  ordered_json data;
  data["imageId"] = d.image_id;
  data["modelName"] = d.model_name;
  ordered_json vec = ordered_json::array();
  vec.get_ref<ordered_json::array_t&>().reserve(d.feature_vector.size());
  for (float f : d.feature_vector) vec.push_back(float_as_short_double(f));
  data["featureVector"] = std::move(vec);
  put_opt(data, "expectedDimension", d.expected_dimension);
  ordered_json vm;
  vm["extractionTime"] = format_iso8601(d.vector_metadata.extraction_time);
  vm["processingTimeMs"] = d.vector_metadata.processing_time_ms;
  vm["modelVersion"] = d.vector_metadata.model_version;
  put_opt(vm, "confidence", d.vector_metadata.confidence);
  data["vectorMetadata"] = std::move(vm);
  if (d.image_metadata) {
    data["imageMetadata"] = ordered_json{{"width", d.image_metadata->width},
                                         {"height", d.image_metadata->height},
                                         {"format", d.image_metadata->format},
                                         {"fileSize", d.image_metadata->file_size}};
  }
  j["data"] = std::move(data);
  if (e.retry_policy) j["retryPolicy"] = retry_json(*e.retry_policy);
  return j;
}

ordered_json to_json(const ProcessingCompletedEvent& e) {
  auto j = envelope_json(e.envelope, event_types::kProcessingCompleted);
  const auto& d = e.data;
  ordered_json data;
  data["imageId"] = d.image_id;
  data["status"] = d.status;
  ordered_json steps = ordered_json::array();
  for (const auto& s : d.processing_steps) {
    ordered_json step;
    step["step"] = s.step;
    step["status"] = s.status;
    step["duration"] = s.duration_ms;
    put_opt(step, "modelName", s.model_name);
    put_opt(step, "collectionName", s.collection_name);
    steps.push_back(std::move(step));
  }
  data["processingSteps"] = std::move(steps);
  data["totalProcessingTime"] = d.total_processing_time_ms;
  data["searchableAfter"] = format_iso8601(d.searchable_after);
  if (d.duplicate_of)
    data["duplicateOf"] = {{"imageId", d.duplicate_of->image_id}, {"score", d.duplicate_of->score},
                           {"modelName", d.duplicate_of->model_name}};
  j["data"] = std::move(data);
  return j;
}

ordered_json to_json(const ProcessingFailedEvent& e) {
  auto j = envelope_json(e.envelope, event_types::kProcessingFailed);
  const auto& d = e.data;
  ordered_json data;
  data["imageId"] = d.image_id;
  data["stage"] = d.stage;
  put_opt(data, "modelName", d.model_name);
  data["error"] = ordered_json{{"code", d.error_code}, {"message", d.error_message}};
  data["attempt"] = d.attempt;
  data["maxAttempts"] = d.max_attempts;
  data["retryable"] = d.retryable;
  if (d.next_attempt_at) data["nextAttemptAt"] = format_iso8601(*d.next_attempt_at);
  data["originalTopic"] = d.original_topic;
  auto original = ordered_json::parse(d.original_event_json, nullptr, /*allow_exceptions=*/false);
  data["originalEvent"] = original.is_object() ? std::move(original) : ordered_json::object();
  j["data"] = std::move(data);
  return j;
}

std::string dump(const ordered_json& j) {
  return j.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
}

// ---------------------------------------------------------------------------------------------
// Decoding. A Reader walks one JSON object and remembers the first problem with its path, so the
// decoders read straight through and check once at the end.

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kIntMax = std::numeric_limits<int>::max();

class Reader {
 public:
  Reader(const json& obj, std::string path, Error* first_error)
      : obj_(obj), path_(std::move(path)), err_(first_error) {}

  bool failed() const { return err_->message.size() > 0; }

  std::string field(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }

  void fail(const std::string& field_path, const std::string& why) const {
    if (failed()) return;
    *err_ = Error(ErrorCode::kInvalidArgument, field_path + ": " + why).with("field", field_path);
  }

  const json* find(std::string_view key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  const json* require(std::string_view key) const {
    const json* v = find(key);
    if (!v) fail(field(key), "required field is missing");
    return v;
  }

  std::string str(std::string_view key) const {
    const json* v = require(key);
    if (!v) return {};
    if (!v->is_string()) {
      fail(field(key), std::string("expected a string, got ") + v->type_name());
      return {};
    }
    return v->get<std::string>();
  }

  std::optional<std::string> opt_str(std::string_view key) const {
    if (!find(key)) return std::nullopt;
    return str(key);
  }

  // max defaults to int64's; fields held as int pass kIntMax, so a larger value is refused
  // instead of wrapping (2^31 read as -2^31 would not decode again once re-encoded).
  int64_t integer(std::string_view key, int64_t min, int64_t max = kInt64Max) const {
    const json* v = require(key);
    if (!v) return 0;
    return as_integer(*v, field(key), min, max);
  }

  std::optional<int64_t> opt_integer(std::string_view key, int64_t min, int64_t max = kInt64Max) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    return as_integer(*v, field(key), min, max);
  }

  bool boolean(std::string_view key) const {
    const json* v = require(key);
    if (!v) return false;
    if (!v->is_boolean()) {
      fail(field(key), std::string("expected a boolean, got ") + v->type_name());
      return false;
    }
    return v->get<bool>();
  }

  std::optional<bool> opt_boolean(std::string_view key) const {
    if (!find(key)) return std::nullopt;
    return boolean(key);
  }

  std::optional<double> opt_number(std::string_view key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) {
      fail(field(key), std::string("expected a number, got ") + v->type_name());
      return std::nullopt;
    }
    const double d = v->get<double>();
    if (!std::isfinite(d)) fail(field(key), "not a finite number");
    return d;
  }

  Timestamp timestamp(std::string_view key) const {
    const std::string text = str(key);
    if (failed()) return {};
    auto t = parse_iso8601(text);
    if (!t) {
      fail(field(key), t.error().message);
      return {};
    }
    return *t;
  }

  std::optional<Timestamp> opt_timestamp(std::string_view key) const {
    if (!find(key)) return std::nullopt;
    return timestamp(key);
  }

  std::string id(std::string_view key, bool (*valid)(std::string_view), const char* shape) const {
    std::string v = str(key);
    if (!failed() && !valid(v)) fail(field(key), "expected " + std::string(shape) + ", got '" + v + "'");
    return v;
  }

  // A reader over another value that shares this reader's error slot (array elements).
  Reader sub(const json& v, std::string path) const { return Reader(v, std::move(path), err_); }

  // A nested object; on a missing/non-object field returns a Reader over an empty object.
  Reader object(std::string_view key) const {
    const json* v = require(key);
    return object_of(v, key);
  }
  std::optional<Reader> opt_object(std::string_view key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    return object_of(v, key);
  }

  const json* array(std::string_view key) const {
    const json* v = require(key);
    if (v && !v->is_array()) {
      fail(field(key), std::string("expected an array, got ") + v->type_name());
      return nullptr;
    }
    return v;
  }

 private:
  Reader object_of(const json* v, std::string_view key) const {
    static const json kEmpty = json::object();
    if (v && !v->is_object()) {
      fail(field(key), std::string("expected an object, got ") + v->type_name());
      v = nullptr;
    }
    return Reader(v ? *v : kEmpty, field(key), err_);
  }

  int64_t as_integer(const json& v, const std::string& path, int64_t min, int64_t max) const {
    if (!v.is_number_integer()) {
      fail(path, std::string("expected an integer, got ") + v.type_name());
      return 0;
    }
    const int64_t i = v.get<int64_t>();
    if (i < min) fail(path, "must be >= " + std::to_string(min) + ", got " + std::to_string(i));
    if (i > max) fail(path, "must be <= " + std::to_string(max) + ", got " + std::to_string(i));
    return i;
  }

  const json& obj_;
  std::string path_;
  Error* err_;
};

// Parses text, reporting the JSON path at which a syntax error (e.g. a NaN token) occurred.
Result<json> parse_json(std::string_view text) {
  struct Frame {
    bool is_array;
    std::string key;  // current key (objects)
    int64_t index;    // next element index (arrays)
  };
  std::vector<Frame> stack;
  std::string last_key;
  auto path_of = [&]() {
    std::string p;
    for (size_t i = 0; i < stack.size(); ++i) {
      const auto& f = stack[i];
      if (f.is_array) {
        p += "[" + std::to_string(f.index) + "]";
      } else if (!f.key.empty()) {
        if (!p.empty()) p += '.';
        p += f.key;
      }
    }
    return p;
  };
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        stack.push_back(Frame{event == json::parse_event_t::array_start, {}, 0});
        break;
      case json::parse_event_t::key:
        if (!stack.empty()) stack.back().key = parsed.get<std::string>();
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!stack.empty()) stack.pop_back();
        [[fallthrough]];
      case json::parse_event_t::value:
        if (!stack.empty() && stack.back().is_array) ++stack.back().index;
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), callback);
  } catch (const json::parse_error& e) {
    std::string where = path_of();
    if (where.empty()) where = "$";
    return Error(ErrorCode::kInvalidArgument,
                 where + ": invalid JSON (NaN, Infinity and other non-JSON tokens are not allowed): " +
                     e.what())
        .with("field", where)
        .with("offset", std::to_string(e.byte));
  } catch (const json::exception& e) {
    // out_of_range 406: a number beyond double ("1e400"). Not a parse_error, and uncaught it
    // would end the consuming process on every redelivery of the event.
    std::string where = path_of();
    if (where.empty()) where = "$";
    return Error(ErrorCode::kInvalidArgument, where + ": number out of range: " + e.what()).with("field", where);
  }
}

EventEnvelope read_envelope(const Reader& r, std::string_view expected_type, bool correlation_required) {
  EventEnvelope env;
  const std::string version = r.str("eventVersion");
  if (!r.failed()) {
    const auto dot = version.find('.');
    const std::string major = version.substr(0, dot);
    if (major != "1")
      r.fail("eventVersion", "unsupported major version '" + version + "', this reader understands 1.x");
  }
  const std::string type = r.str("eventType");
  if (!r.failed() && type != expected_type)
    r.fail("eventType", "expected '" + std::string(expected_type) + "', got '" + type + "'");
  env.event_id = r.id("eventId", is_event_id, "evt_<uuid>");
  env.timestamp = r.timestamp("timestamp");
  env.tenant_id = r.str("tenantId");
  if (!r.failed() && env.tenant_id.empty()) r.fail("tenantId", "must not be empty");
  if (correlation_required || r.find("correlationId"))
    env.correlation_id = r.id("correlationId", is_event_id, "evt_<uuid>");
  return env;
}

RetryPolicy read_retry(const Reader& r) {
  RetryPolicy p;
  p.max_attempts = static_cast<int>(r.integer("maxAttempts", 1, kIntMax));
  p.backoff_ms = r.integer("backoffMs", 0);
  p.current_attempt = static_cast<int>(r.integer("currentAttempt", 1, kIntMax));
  return p;
}

template <typename T, typename Fn>
Result<T> decode_with(std::string_view text, Fn&& fill) {
  auto parsed = parse_json(text);
  if (!parsed) return std::move(parsed).error();
  if (!parsed->is_object())
    return Error(ErrorCode::kInvalidArgument, "$: an event must be a JSON object").with("field", "$");
  Error err;
  Reader r(*parsed, "", &err);
  T event;
  fill(r, event);
  if (r.failed()) return err;
  return event;
}

void read_image_uploaded(const Reader& r, ImageUploadedEvent& e) {
  e.envelope = read_envelope(r, event_types::kImageUploaded, false);
  auto d = r.object("data");
  e.data.image_id = d.id("imageId", is_image_id, "img_<uuid>");
  e.data.file_name = d.str("fileName");
  e.data.file_path = d.str("filePath");
  e.data.file_size = d.integer("fileSize", 0);
  e.data.content_type = d.str("contentType");
  e.data.uploaded_by = d.opt_str("uploadedBy");
  auto m = d.object("metadata");
  e.data.metadata.width = static_cast<int>(m.integer("width", 1, kIntMax));
  e.data.metadata.height = static_cast<int>(m.integer("height", 1, kIntMax));
  e.data.metadata.format = m.str("format");
  e.data.metadata.color_profile = m.opt_str("colorProfile");
  e.data.metadata.original_file_name = m.opt_str("originalFileName");
  auto sp = d.object("storageProvider");
  e.data.storage_provider.type = sp.str("type");
  e.data.storage_provider.container_name = sp.opt_str("containerName");
  e.data.storage_provider.blob_name = sp.opt_str("blobName");
  auto po = r.object("processingOptions");
  if (const json* models = po.array("models")) {
    if (models->empty()) po.fail(po.field("models"), "must list at least one model");
    for (size_t i = 0; i < models->size(); ++i) {
      const auto& m_name = (*models)[i];
      if (!m_name.is_string() || m_name.get<std::string>().empty()) {
        po.fail(po.field("models") + "[" + std::to_string(i) + "]", "expected a model name");
        break;
      }
      e.processing_options.models.push_back(m_name.get<std::string>());
    }
  }
  if (auto p = po.opt_str("priority")) {
    e.processing_options.priority = parse_priority(*p);
    if (!e.processing_options.priority) po.fail(po.field("priority"), "expected high, normal or low, got '" + *p + "'");
  }
  e.processing_options.skip_duplicate_check = po.opt_boolean("skipDuplicateCheck");
  e.processing_options.generate_thumbnail = po.opt_boolean("generateThumbnail");
}

void read_feature_extraction(const Reader& r, FeatureExtractionRequestedEvent& e) {
  e.envelope = read_envelope(r, event_types::kFeatureExtractionRequested, true);
  auto d = r.object("data");
  e.data.image_id = d.id("imageId", is_image_id, "img_<uuid>");
  e.data.image_path = d.str("imagePath");
  e.data.model_name = d.str("modelName");
  e.data.model_version = d.opt_str("modelVersion");
  if (auto dim = d.opt_integer("expectedDimension", 1, kIntMax)) e.data.expected_dimension = static_cast<int>(*dim);
  if (auto p = d.opt_str("priority")) {
    e.data.priority = parse_priority(*p);
    if (!e.data.priority) d.fail(d.field("priority"), "expected high, normal or low, got '" + *p + "'");
  }
  if (auto eo = d.opt_object("extractionOptions")) {
    ExtractionOptions o;
    o.normalize = eo->opt_boolean("normalize");
    o.return_metadata = eo->opt_boolean("returnMetadata");
    if (auto t = eo->opt_integer("timeout", 1, kIntMax)) o.timeout_seconds = static_cast<int>(*t);
    e.data.extraction_options = o;
  }
  e.retry_policy = read_retry(r.object("retryPolicy"));
}

void read_vector_indexing(const Reader& r, VectorIndexingRequestedEvent& e) {
  e.envelope = read_envelope(r, event_types::kVectorIndexingRequested, true);
  auto d = r.object("data");
  e.data.image_id = d.id("imageId", is_image_id, "img_<uuid>");
  e.data.model_name = d.str("modelName");
  if (auto dim = d.opt_integer("expectedDimension", 1, kIntMax)) e.data.expected_dimension = static_cast<int>(*dim);
  if (const json* vec = d.array("featureVector")) {
    const std::string path = d.field("featureVector");
    if (vec->empty()) d.fail(path, "must not be empty");
    e.data.feature_vector.reserve(vec->size());
    for (size_t i = 0; i < vec->size() && !d.failed(); ++i) {
      const auto& x = (*vec)[i];
      if (!x.is_number()) {
        d.fail(path + "[" + std::to_string(i) + "]", std::string("expected a number, got ") + x.type_name());
        break;
      }
      const float f = static_cast<float>(x.get<double>());
      if (!std::isfinite(f)) {
        d.fail(path + "[" + std::to_string(i) + "]", "not a finite 32-bit float");
        break;
      }
      e.data.feature_vector.push_back(f);
    }
    if (!d.failed() && e.data.expected_dimension &&
        static_cast<size_t>(*e.data.expected_dimension) != e.data.feature_vector.size()) {
      d.fail(path, "has " + std::to_string(e.data.feature_vector.size()) +
                       " dimensions but expectedDimension is " +
                       std::to_string(*e.data.expected_dimension));
    }
  }
  auto vm = d.object("vectorMetadata");
  e.data.vector_metadata.extraction_time = vm.timestamp("extractionTime");
  e.data.vector_metadata.processing_time_ms = vm.integer("processingTimeMs", 0);
  e.data.vector_metadata.model_version = vm.str("modelVersion");
  e.data.vector_metadata.confidence = vm.opt_number("confidence");
  if (auto im = d.opt_object("imageMetadata")) {
    IndexedImageMetadata m;
    m.width = static_cast<int>(im->integer("width", 1, kIntMax));
    m.height = static_cast<int>(im->integer("height", 1, kIntMax));
    m.format = im->str("format");
    m.file_size = im->integer("fileSize", 0);
    e.data.image_metadata = m;
  }
  if (auto rp = r.opt_object("retryPolicy")) e.retry_policy = read_retry(*rp);
}

void read_processing_completed(const Reader& r, ProcessingCompletedEvent& e) {
  e.envelope = read_envelope(r, event_types::kProcessingCompleted, true);
  auto d = r.object("data");
  e.data.image_id = d.id("imageId", is_image_id, "img_<uuid>");
  e.data.status = d.str("status");
  if (const json* steps = d.array("processingSteps")) {
    for (size_t i = 0; i < steps->size() && !d.failed(); ++i) {
      const std::string path = d.field("processingSteps") + "[" + std::to_string(i) + "]";
      if (!(*steps)[i].is_object()) {
        d.fail(path, "expected an object");
        break;
      }
      const Reader s = d.sub((*steps)[i], path);
      ProcessingStep step;
      step.step = s.str("step");
      step.status = s.str("status");
      step.duration_ms = s.integer("duration", 0);
      step.model_name = s.opt_str("modelName");
      step.collection_name = s.opt_str("collectionName");
      e.data.processing_steps.push_back(std::move(step));
    }
  }
  e.data.total_processing_time_ms = d.integer("totalProcessingTime", 0);
  e.data.searchable_after = d.timestamp("searchableAfter");
  if (auto dup = d.opt_object("duplicateOf")) {
    DuplicateRef ref;
    ref.image_id = dup->id("imageId", is_image_id, "img_<uuid>");
    ref.score = dup->opt_number("score").value_or(0);
    ref.model_name = dup->str("modelName");
    e.data.duplicate_of = std::move(ref);
  }
}

void read_processing_failed(const Reader& r, ProcessingFailedEvent& e) {
  e.envelope = read_envelope(r, event_types::kProcessingFailed, true);
  auto d = r.object("data");
  e.data.image_id = d.id("imageId", is_image_id, "img_<uuid>");
  e.data.stage = d.str("stage");
  e.data.model_name = d.opt_str("modelName");
  auto err = d.object("error");
  e.data.error_code = err.str("code");
  e.data.error_message = err.str("message");
  e.data.attempt = static_cast<int>(d.integer("attempt", 1, kIntMax));
  e.data.max_attempts = static_cast<int>(d.integer("maxAttempts", 1, kIntMax));
  e.data.retryable = d.boolean("retryable");
  e.data.next_attempt_at = d.opt_timestamp("nextAttemptAt");
  e.data.original_topic = d.str("originalTopic");
  if (const json* orig = d.require("originalEvent")) {
    if (!orig->is_object()) d.fail(d.field("originalEvent"), "expected an object");
    else e.data.original_event_json = orig->dump();
  }
}

}  // namespace

std::string encode(const ImageUploadedEvent& e) { return dump(to_json(e)); }
std::string encode(const FeatureExtractionRequestedEvent& e) { return dump(to_json(e)); }
std::string encode(const VectorIndexingRequestedEvent& e) { return dump(to_json(e)); }
std::string encode(const ProcessingCompletedEvent& e) { return dump(to_json(e)); }
std::string encode(const ProcessingFailedEvent& e) { return dump(to_json(e)); }
std::string encode(const AnyEvent& e) {
  return std::visit([](const auto& ev) { return encode(ev); }, e);
}

Result<ImageUploadedEvent> decode_image_uploaded(std::string_view text) {
  return decode_with<ImageUploadedEvent>(text, read_image_uploaded);
}
Result<FeatureExtractionRequestedEvent> decode_feature_extraction_requested(std::string_view text) {
  return decode_with<FeatureExtractionRequestedEvent>(text, read_feature_extraction);
}
Result<VectorIndexingRequestedEvent> decode_vector_indexing_requested(std::string_view text) {
  return decode_with<VectorIndexingRequestedEvent>(text, read_vector_indexing);
}
Result<ProcessingCompletedEvent> decode_processing_completed(std::string_view text) {
  return decode_with<ProcessingCompletedEvent>(text, read_processing_completed);
}
Result<ProcessingFailedEvent> decode_processing_failed(std::string_view text) {
  return decode_with<ProcessingFailedEvent>(text, read_processing_failed);
}

Result<AnyEvent> decode_any(std::string_view text) {
  auto parsed = parse_json(text);
  if (!parsed) return std::move(parsed).error();
  const json* type = parsed->is_object() && parsed->contains("eventType") ? &(*parsed)["eventType"] : nullptr;
  if (!type || !type->is_string())
    return Error(ErrorCode::kInvalidArgument, "eventType: required string field is missing")
        .with("field", "eventType");
  const auto t = type->get<std::string>();
  auto wrap = [](auto result) -> Result<AnyEvent> {
    if (!result) return std::move(result).error();
    return AnyEvent(std::move(result).value());
  };
  if (t == event_types::kImageUploaded) return wrap(decode_image_uploaded(text));
  if (t == event_types::kFeatureExtractionRequested) return wrap(decode_feature_extraction_requested(text));
  if (t == event_types::kVectorIndexingRequested) return wrap(decode_vector_indexing_requested(text));
  if (t == event_types::kProcessingCompleted) return wrap(decode_processing_completed(text));
  if (t == event_types::kProcessingFailed) return wrap(decode_processing_failed(text));
  return Error(ErrorCode::kInvalidArgument, "eventType: unknown event type '" + t + "'")
      .with("field", "eventType");
}

std::string_view event_type(const AnyEvent& e) {
  switch (e.index()) {
    case 0: return event_types::kImageUploaded;
    case 1: return event_types::kFeatureExtractionRequested;
    case 2: return event_types::kVectorIndexingRequested;
    case 3: return event_types::kProcessingCompleted;
    default: return event_types::kProcessingFailed;
  }
}

const EventEnvelope& envelope(const AnyEvent& e) {
  return std::visit([](const auto& ev) -> const EventEnvelope& { return ev.envelope; }, e);
}

const std::string& image_id(const AnyEvent& e) {
  return std::visit([](const auto& ev) -> const std::string& { return ev.data.image_id; }, e);
}

}  // namespace deeplens
