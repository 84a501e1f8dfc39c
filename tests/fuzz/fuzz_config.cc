// Fuzzes the TOML configuration loader (common/config.h Config::load) with arbitrary bytes as the
// config file, over the real key table (app/settings.cc) plus a boolean and a list key of our own
// (the table has none), the [[models]] section and the "kafka." passthrough, as `deeplens` loads it.
// Invariants:
//  - a refusal is kInvalidArgument and names the file (path) or the key;
//  - a loaded value reads back through its typed accessor in canonical form (integers as
//    std::to_string prints them, booleans "true"/"false", numbers finite), and its origin is the
//    default or this file;
//  - what loads, written back as TOML (every key quoted, values in their type), loads to the same
//    values, origins, sections and passthrough settings.
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "app/settings.h"
#include "common/config.h"
#include "fuzz_check.h"

namespace {

using namespace deeplens;

const std::filesystem::path& config_file() {
  static const std::filesystem::path path = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "fuzz_config-XXXXXX").string();
    const int fd = ::mkstemp(tmpl.data());
    if (fd < 0) std::abort();
    ::close(fd);
    std::atexit([] { std::filesystem::remove(config_file()); });
    return std::filesystem::path(tmpl);
  }();
  return path;
}

void write_file(std::string_view text) {
  std::ofstream out(config_file(), std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  if (!out.good()) std::abort();
}

const std::vector<ConfigKeySpec>& keys() {
  static const std::vector<ConfigKeySpec> table = [] {
    auto app = app::config_keys();
    std::vector<ConfigKeySpec> out(app.begin(), app.end());
    out.push_back(ConfigKeySpec{"fuzz.enabled", ConfigType::kBool, "false", "a boolean key"});
    out.push_back(ConfigKeySpec{"fuzz.items", ConfigType::kList, "a,b", "a list key"});
    return out;
  }();
  return table;
}

Result<Config> load() {
  ConfigSources sources;
  sources.file = config_file();
  sources.section_names = app::config_sections();
  sources.passthrough_prefixes = {"kafka."};
  return Config::load(keys(), sources);
}

// A TOML basic string.
std::string toml_string(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string toml_value(ConfigType type, const std::string& text) {
  switch (type) {
    case ConfigType::kString: return toml_string(text);
    case ConfigType::kInt:
    case ConfigType::kBool: return text;
    case ConfigType::kDouble: {
      // The text is std::to_string of a TOML integer or std::to_chars of a float; the latter can
      // look like an integer ("-0", "-555555555555555540992"): write those as floats.
      if (text.find_first_of(".eEin") != std::string::npos) return text;
      int64_t v = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      const bool int64_text = ec == std::errc() && end == text.data() + text.size() && text != "-0";
      return int64_text ? text : text + ".0";
    }
    case ConfigType::kList: return "[" + toml_string(text) + "]";  // one item: the comma-joined text
  }
  return text;
}

std::string write_back(const Config& cfg) {
  std::string out;
  for (const auto& spec : keys())
    if (cfg.origin(spec.key) != "default") out += toml_string(spec.key) + " = " + toml_value(spec.type, cfg.str(spec.key)) + "\n";
  for (const auto& [k, v] : cfg.passthrough("kafka.")) out += toml_string("kafka." + k) + " = " + toml_string(v) + "\n";
  for (const auto& name : app::config_sections())
    for (const auto& section : cfg.sections(name)) {
      out += "[[" + name + "]]\n";
      for (const auto& [k, v] : section) out += toml_string(k) + " = " + toml_string(v) + "\n";
    }
  return out;
}

void check_values(const Config& cfg) {
  const std::string from_file = "file " + config_file().string();
  for (const auto& spec : keys()) {
    const std::string& origin = cfg.origin(spec.key);
    FUZZ_CHECK(origin == "default" || origin == from_file, origin.c_str());
    const std::string& text = cfg.str(spec.key);
    switch (spec.type) {
      case ConfigType::kInt:
        FUZZ_CHECK(std::to_string(cfg.integer(spec.key)) == text, ("integer not canonical: " + text).c_str());
        break;
      case ConfigType::kBool:
        FUZZ_CHECK(text == "true" || text == "false", text.c_str());
        FUZZ_CHECK(cfg.boolean(spec.key) == (text == "true"), "boolean");
        break;
      case ConfigType::kDouble:
        FUZZ_CHECK(std::isfinite(cfg.number(spec.key)), text.c_str());
        break;
      case ConfigType::kString:
        break;
      case ConfigType::kList:
        for (const auto& item : cfg.list(spec.key))
          FUZZ_CHECK(!item.empty() && item.find(',') == std::string::npos, "list item");
        break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_file(std::string_view(reinterpret_cast<const char*>(data), size));
  const auto loaded = load();
  if (!loaded) {
    const Error& e = loaded.error();
    FUZZ_CHECK(e.code == ErrorCode::kInvalidArgument, e.to_string().c_str());
    FUZZ_CHECK(e.context.count("path") || e.context.count("key"), e.to_string().c_str());
    return 0;
  }
  check_values(*loaded);

  const std::string text = write_back(*loaded);
  write_file(text);
  const auto again = load();
  FUZZ_CHECK(again, (again ? "" : ("written-back config does not load: " + again.error().to_string() + "\n" + text).c_str()));
  for (const auto& spec : keys()) {
    FUZZ_CHECK(again->str(spec.key) == loaded->str(spec.key), (spec.key + " changed:\n" + text).c_str());
    FUZZ_CHECK(again->origin(spec.key) == loaded->origin(spec.key), spec.key.c_str());
  }
  FUZZ_CHECK(again->passthrough("kafka.") == loaded->passthrough("kafka."), ("passthrough changed:\n" + text).c_str());
  for (const auto& name : app::config_sections())
    FUZZ_CHECK(again->sections(name) == loaded->sections(name), ("sections changed:\n" + text).c_str());
  return 0;
}
