#include "features/model_spec.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <vector>

namespace deeplens {
namespace {

// Which kinds of model a key applies to (bit per ModelKind).
constexpr unsigned kDnn = 1u << static_cast<unsigned>(ModelKind::kDnn);
constexpr unsigned kRemote = 1u << static_cast<unsigned>(ModelKind::kRemote);
constexpr unsigned kBuiltin = 1u << static_cast<unsigned>(ModelKind::kBuiltin);
constexpr unsigned kAny = kDnn | kRemote | kBuiltin;

struct KeyRule {
  std::string_view key;
  unsigned kinds;
};

// The built-in descriptor fixes its own version and normalisation; `dimension` on it is a check.
constexpr KeyRule kKeys[] = {
    {"name", kAny},          {"kind", kAny},          {"default", kAny},
    {"batch_size", kAny},    {"dimension", kAny},     {"version", kDnn | kRemote},
    {"normalize", kDnn | kRemote},                    {"file", kDnn},
    {"config_file", kDnn},   {"input_width", kDnn},   {"input_height", kDnn},
    {"mean", kDnn},          {"scale", kDnn},         {"std", kDnn},
    {"channel_order", kDnn}, {"output_layer", kDnn},  {"threads", kDnn},
    {"url", kRemote},        {"timeout_ms", kRemote}, {"duplicate_threshold", kAny},
};

}  // namespace

double default_duplicate_threshold(ModelKind kind) {
  // Calibrated on photographs and their edits against look-alike pairs (bench/README.md,
  // "Near-duplicate thresholds"): mobilenet_v2's smallest threshold with precision >= 0.99; the
  // built-in descriptor never reaches 0.99, 0.98 is its 0.96. A remote model is unknown: off.
  switch (kind) {
    case ModelKind::kDnn:
      return 0.957;
    case ModelKind::kBuiltin:
      return 0.98;
    case ModelKind::kRemote:
      return 0.0;
  }
  return 0.0;
}

namespace {

bool applies(const KeyRule& rule, ModelKind kind) {
  return (rule.kinds & (1u << static_cast<unsigned>(kind))) != 0;
}

std::string kinds_of(const KeyRule& rule) {
  std::string out;
  for (ModelKind k : {ModelKind::kDnn, ModelKind::kRemote, ModelKind::kBuiltin}) {
    if (!applies(rule, k)) continue;
    if (!out.empty()) out += " or ";
    out += std::string("\"") + model_kind_name(k) + "\"";
  }
  return out;
}

// Reads typed values out of one section, producing errors that name "models[i].key".
class SectionReader {
 public:
  SectionReader(const ConfigSection& section, size_t index)
      : section_(section), prefix_("models[" + std::to_string(index) + "].") {}

  Error error(std::string_view key, const std::string& why) const {
    const std::string full = prefix_ + std::string(key);
    return Error(ErrorCode::kInvalidArgument, full + ": " + why).with("key", full);
  }

  const std::string* find(std::string_view key) const {
    auto it = section_.find(std::string(key));
    return it == section_.end() ? nullptr : &it->second;
  }

  // Each reader leaves `out` untouched when the key is absent.
  Status read_string(std::string_view key, std::string& out) const {
    if (const auto* v = find(key)) out = *v;
    return ok_status();
  }

  Status read_int(std::string_view key, int& out, int64_t min, int64_t max) const {
    const auto* v = find(key);
    if (!v) return ok_status();
    int64_t parsed = 0;
    const char* end = v->data() + v->size();
    auto [p, ec] = std::from_chars(v->data(), end, parsed);
    if (v->empty() || ec != std::errc() || p != end)
      return error(key, "expected an integer, got '" + *v + "'");
    if (parsed < min || parsed > max)
      return error(key, "expected an integer in " + std::to_string(min) + ".." + std::to_string(max) +
                            ", got " + *v);
    out = static_cast<int>(parsed);
    return ok_status();
  }

  Status read_bool(std::string_view key, bool& out) const {
    const auto* v = find(key);
    if (!v) return ok_status();
    if (*v == "true") {
      out = true;
    } else if (*v == "false") {
      out = false;
    } else {
      return error(key, "expected true or false, got '" + *v + "'");
    }
    return ok_status();
  }

  Status read_number(std::string_view key, double& out) const {
    const auto* v = find(key);
    if (!v) return ok_status();
    auto parsed = parse_number(*v);
    if (!parsed) return error(key, "expected a number, got '" + *v + "'");
    out = *parsed;
    return ok_status();
  }

  // One number for all three channels, or three comma-separated numbers.
  Status read_triple(std::string_view key, std::array<double, 3>& out) const {
    const auto* v = find(key);
    if (!v) return ok_status();
    std::vector<double> values;
    size_t start = 0;
    while (true) {
      const size_t comma = v->find(',', start);
      auto parsed = parse_number(v->substr(start, comma == std::string::npos ? std::string::npos
                                                                              : comma - start));
      if (!parsed) break;
      values.push_back(*parsed);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    const size_t expected_parts =
        static_cast<size_t>(std::count(v->begin(), v->end(), ',')) + 1;
    if (values.size() != expected_parts || (values.size() != 1 && values.size() != 3))
      return error(key, "expected one number or three comma-separated numbers (one per channel), got '" +
                            *v + "'");
    if (values.size() == 1) values.assign(3, values[0]);
    out = {values[0], values[1], values[2]};
    return ok_status();
  }

 private:
  static std::optional<double> parse_number(std::string_view text) {
    while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
    while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
    if (text.empty()) return std::nullopt;
    const std::string s(text);
    char* end = nullptr;
    const double d = std::strtod(s.c_str(), &end);
    if (end != s.c_str() + s.size() || !std::isfinite(d)) return std::nullopt;
    return d;
  }

  const ConfigSection& section_;
  std::string prefix_;
};

bool valid_model_name(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string known_keys(ModelKind kind) {
  std::string out;
  for (const auto& rule : kKeys) {
    if (!applies(rule, kind)) continue;
    if (!out.empty()) out += ", ";
    out += rule.key;
  }
  return out;
}

// Returns the error of a failed Status from the enclosing function.
#define DEEPLENS_TRY(expr)                                        \
  do {                                                            \
    if (auto st_ = (expr); !st_) return std::move(st_).error();   \
  } while (0)

}  // namespace

const char* model_kind_name(ModelKind kind) {
  switch (kind) {
    case ModelKind::kDnn: return "dnn";
    case ModelKind::kRemote: return "remote";
    case ModelKind::kBuiltin: return "builtin";
  }
  return "?";
}

const char* channel_order_name(ChannelOrder order) {
  return order == ChannelOrder::kBgr ? "bgr" : "rgb";
}

Result<ModelSpec> parse_model_spec(const ConfigSection& section, size_t index) {
  SectionReader r(section, index);
  ModelSpec spec;

  if (const auto* kind = r.find("kind")) {
    if (*kind == "dnn") {
      spec.kind = ModelKind::kDnn;
    } else if (*kind == "remote") {
      spec.kind = ModelKind::kRemote;
    } else if (*kind == "builtin") {
      spec.kind = ModelKind::kBuiltin;
    } else {
      return r.error("kind", "expected \"dnn\", \"remote\" or \"builtin\", got '" + *kind + "'");
    }
  }

  // Unknown keys, and keys of another kind, before anything else: a typo should not surface as
  // "file is required".
  for (const auto& [key, value] : section) {
    const KeyRule* rule = nullptr;
    for (const auto& k : kKeys)
      if (k.key == key) rule = &k;
    if (!rule)
      return r.error(key, "unknown key; a " + std::string(model_kind_name(spec.kind)) +
                              " model takes: " + known_keys(spec.kind));
    if (!applies(*rule, spec.kind))
      return r.error(key, "only applies to kind = " + kinds_of(*rule) + " (this model is kind = \"" +
                              model_kind_name(spec.kind) + "\")");
  }

  DEEPLENS_TRY(r.read_string("name", spec.name));
  if (spec.kind == ModelKind::kBuiltin) {
    if (spec.name.empty()) spec.name = "builtin";
    if (spec.name != "builtin")
      return r.error("name", "the built-in descriptor is always named \"builtin\", got '" + spec.name + "'");
  }
  if (!r.find("name") && spec.kind != ModelKind::kBuiltin)
    return r.error("name", "required (the name requests use, e.g. \"mobilenet_v2\")");
  if (spec.kind != ModelKind::kBuiltin && spec.name == "builtin")
    return r.error("name", "\"builtin\" is reserved for the built-in descriptor; pick another name");
  if (!valid_model_name(spec.name))
    return r.error("name", "expected 1-64 characters of a-z, 0-9, '_' or '-', got '" + spec.name + "'");

  DEEPLENS_TRY(r.read_string("version", spec.version));
  if (spec.version.empty()) return r.error("version", "must not be empty");
  DEEPLENS_TRY(r.read_bool("default", spec.is_default));
  DEEPLENS_TRY(r.read_int("batch_size", spec.batch_size, 1, 256));
  DEEPLENS_TRY(r.read_bool("normalize", spec.normalize));
  DEEPLENS_TRY(r.read_int("dimension", spec.dimension, 1, 1 << 20));
  if (spec.kind != ModelKind::kBuiltin && !r.find("dimension"))
    return r.error("dimension", "required (the length of the model's output vector, e.g. 1280)");
  spec.duplicate_threshold = default_duplicate_threshold(spec.kind);
  DEEPLENS_TRY(r.read_number("duplicate_threshold", spec.duplicate_threshold));
  if (spec.duplicate_threshold < 0.0 || spec.duplicate_threshold > 1.0)
    return r.error("duplicate_threshold", "expected 0 (no near-duplicate check) up to 1 (a cosine similarity)");

  switch (spec.kind) {
    case ModelKind::kDnn: {
      DEEPLENS_TRY(r.read_string("file", spec.file));
      if (spec.file.empty()) return r.error("file", "required (the model file, e.g. model.onnx)");
      DEEPLENS_TRY(r.read_string("config_file", spec.config_file));
      DEEPLENS_TRY(r.read_int("input_width", spec.input_width, 1, 4096));
      DEEPLENS_TRY(r.read_int("input_height", spec.input_height, 1, 4096));
      DEEPLENS_TRY(r.read_triple("mean", spec.mean));
      DEEPLENS_TRY(r.read_number("scale", spec.scale));
      if (spec.scale == 0.0) return r.error("scale", "must not be 0");
      DEEPLENS_TRY(r.read_triple("std", spec.std));
      for (double s : spec.std)
        if (s == 0.0) return r.error("std", "must not be 0");
      if (const auto* order = r.find("channel_order")) {
        if (*order == "rgb") {
          spec.channel_order = ChannelOrder::kRgb;
        } else if (*order == "bgr") {
          spec.channel_order = ChannelOrder::kBgr;
        } else {
          return r.error("channel_order", "expected \"rgb\" or \"bgr\", got '" + *order + "'");
        }
      }
      DEEPLENS_TRY(r.read_string("output_layer", spec.output_layer));
      DEEPLENS_TRY(r.read_int("threads", spec.threads, 0, 1024));
      break;
    }
    case ModelKind::kRemote: {
      DEEPLENS_TRY(r.read_string("url", spec.url));
      if (spec.url.empty())
        return r.error("url", "required (the extraction service, e.g. \"http://127.0.0.1:8000\")");
      if (!spec.url.starts_with("http://") && !spec.url.starts_with("https://"))
        return r.error("url", "expected an http:// or https:// URL, got '" + spec.url + "'");
      while (spec.url.ends_with('/')) spec.url.pop_back();
      DEEPLENS_TRY(r.read_int("timeout_ms", spec.timeout_ms, 1, 600000));
      break;
    }
    case ModelKind::kBuiltin:
      break;
  }
  return spec;
}

#undef DEEPLENS_TRY

}  // namespace deeplens
