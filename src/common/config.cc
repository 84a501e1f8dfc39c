#include "common/config.h"

#include <regex>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <stdexcept>
#include <toml++/toml.h>

extern char** environ;

namespace deeplens {
namespace {

const char* type_name(ConfigType t) {
  switch (t) {
    case ConfigType::kString: return "string";
    case ConfigType::kInt: return "integer";
    case ConfigType::kBool: return "boolean";
    case ConfigType::kDouble: return "number";
    case ConfigType::kList: return "list of strings";
  }
  return "?";
}

// Checks that text parses as type; returns the canonical text or an error message.
std::optional<std::string> check_text(ConfigType type, const std::string& text, std::string& why) {
  switch (type) {
    case ConfigType::kString:
    case ConfigType::kList:
      return text;
    case ConfigType::kInt: {
      int64_t v = 0;
      const auto* end = text.data() + text.size();
      auto [p, ec] = std::from_chars(text.data(), end, v);
      if (ec != std::errc() || p != end || text.empty()) {
        why = "expected an integer";
        return std::nullopt;
      }
      return std::to_string(v);
    }
    case ConfigType::kDouble: {
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v)) {
        why = "expected a number";
        return std::nullopt;
      }
      return text;
    }
    case ConfigType::kBool: {
      std::string lower = text;
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      if (lower == "true" || lower == "1" || lower == "yes" || lower == "on") return "true";
      if (lower == "false" || lower == "0" || lower == "no" || lower == "off") return "false";
      why = "expected true or false";
      return std::nullopt;
    }
  }
  return std::nullopt;
}

// Renders a TOML scalar or array of scalars as the textual form check_text accepts.
std::optional<std::string> toml_to_text(const toml::node& node, ConfigType type, std::string& why) {
  auto scalar = [](const toml::node& n) -> std::optional<std::string> {
    if (auto s = n.value<std::string>(); n.is_string() && s) return *s;
    if (n.is_integer()) return std::to_string(*n.value<int64_t>());
    if (n.is_floating_point()) {
      char buf[64];
      auto [end, ec] = std::to_chars(buf, buf + sizeof buf, *n.value<double>());  // shortest exact form
      (void)ec;
      return std::string(buf, end);
    }
    if (n.is_boolean()) return *n.value<bool>() ? "true" : "false";
    return std::nullopt;
  };
  if (type == ConfigType::kList) {
    const auto* arr = node.as_array();
    if (!arr) {
      why = "expected an array of strings";
      return std::nullopt;
    }
    // Arrays of strings or numbers ("mean = [127.5, 127.5, 127.5]") become comma-joined text.
    std::string out;
    for (const auto& item : *arr) {
      auto text = item.is_array() || item.is_table() ? std::nullopt : scalar(item);
      if (!text) {
        why = "expected an array of strings or numbers";
        return std::nullopt;
      }
      if (!out.empty()) out += ',';
      out += *text;
    }
    return out;
  }
  const bool type_ok = (type == ConfigType::kString && node.is_string()) ||
                       (type == ConfigType::kInt && node.is_integer()) ||
                       (type == ConfigType::kDouble && (node.is_floating_point() || node.is_integer())) ||
                       (type == ConfigType::kBool && node.is_boolean());
  if (!type_ok) {
    why = std::string("expected ") + type_name(type);
    return std::nullopt;
  }
  return scalar(node);
}

void flatten(const toml::table& table, const std::string& prefix,
             std::vector<std::pair<std::string, const toml::node*>>& out) {
  for (const auto& [k, v] : table) {
    std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const auto* sub = v.as_table()) {
      flatten(*sub, key, out);
    } else {
      out.emplace_back(std::move(key), &v);
    }
  }
}

Error key_error(const std::string& key, const std::string& origin, const std::string& why) {
  return Error(ErrorCode::kInvalidArgument, "config key '" + key + "' (" + origin + "): " + why)
      .with("key", key)
      .with("origin", origin);
}

}  // namespace

namespace {
bool names_secret(std::string_view key) {
  std::string k(key);
  for (auto& c : k) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* word : {"key", "password", "secret", "token", "credential"}) {
    const std::string w = word;
    if (k.size() >= w.size() && k.compare(k.size() - w.size(), w.size(), w) == 0) return true;
    if (k.find(w + "_") != std::string::npos || k.find(w + ".") != std::string::npos) return true;
  }
  return false;
}
}  // namespace

std::string redact_secrets(std::string_view text) {
  static const std::regex kUrlPassword(R"(([a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*):[^@/\s]*@)");
  static const std::regex kPairs(R"(((?:AccountKey|SharedAccessSignature|password|sig|api[-_]?key)=)[^;&\s]+)",
                                 std::regex::icase);
  std::string out = std::regex_replace(std::string(text), kUrlPassword, "$1:<redacted>@");
  return std::regex_replace(out, kPairs, "$1<redacted>");
}

std::string redact_config_value(std::string_view key, std::string_view value) {
  if (value.empty()) return std::string();
  if (names_secret(key)) return "<redacted>";
  return redact_secrets(value);
}

std::string Config::env_name(const std::string& key) {
  std::string out = "DEEPLENS_";
  for (char c : key) out += c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::map<std::string, std::string> Config::process_environment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    if (!kv.starts_with("DEEPLENS_")) continue;
    const auto eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  return env;
}

Result<Config> Config::load(std::span<const ConfigKeySpec> keys, const ConfigSources& sources) {
  Config cfg;
  std::map<std::string, const ConfigKeySpec*> specs;
  for (const auto& spec : keys) {
    specs[spec.key] = &spec;
    cfg.values_[spec.key] = Value{spec.type, spec.default_value, "default"};
  }
  auto is_passthrough = [&](const std::string& key) {
    for (const auto& p : sources.passthrough_prefixes)
      if (key.size() > p.size() && key.compare(0, p.size(), p) == 0) return true;
    return false;
  };
  auto assign = [&](const std::string& key, const std::string& text,
                    const std::string& origin) -> Status {
    auto it = specs.find(key);
    if (it == specs.end() && is_passthrough(key)) {
      cfg.passthrough_[key] = text;
      return {};
    }
    if (it == specs.end()) return key_error(key, origin, "unknown key");
    std::string why;
    auto canonical = check_text(it->second->type, text, why);
    if (!canonical) return key_error(key, origin, why + ", got '" + text + "'");
    cfg.values_[key] = Value{it->second->type, *canonical, origin};
    return {};
  };

  if (sources.file) {
    const std::string origin = "file " + sources.file->string();
    toml::table table;
    try {
      table = toml::parse_file(sources.file->string());
    } catch (const toml::parse_error& e) {
      return Error(ErrorCode::kInvalidArgument,
                   "cannot parse config file " + sources.file->string() + ": " +
                       std::string(e.description()))
          .with("path", sources.file->string())
          .with("line", std::to_string(e.source().begin.line));
    }
    std::vector<std::pair<std::string, const toml::node*>> flat;
    flatten(table, "", flat);
    for (const auto& [key, node] : flat) {
      const bool is_section = std::find(sources.section_names.begin(), sources.section_names.end(),
                                        key) != sources.section_names.end();
      if (is_section) {
        const auto* arr = node->as_array();
        if (!arr) return key_error(key, origin, "expected [[" + key + "]] tables");
        auto& out = cfg.sections_[key];
        for (size_t i = 0; i < arr->size(); ++i) {
          const auto* t = (*arr)[i].as_table();
          if (!t) return key_error(key, origin, "expected [[" + key + "]] tables");
          ConfigSection section;
          for (const auto& [k, v] : *t) {
            std::string why;
            const auto type = v.is_array() ? ConfigType::kList
                              : v.is_string() ? ConfigType::kString
                              : v.is_boolean() ? ConfigType::kBool
                              : v.is_integer() ? ConfigType::kInt
                                               : ConfigType::kDouble;
            auto text = toml_to_text(v, type, why);
            if (!text)
              return key_error(key + "[" + std::to_string(i) + "]." + std::string(k.str()), origin,
                               why);
            section[std::string(k.str())] = *text;
          }
          out.push_back(std::move(section));
        }
        continue;
      }
      auto it = specs.find(key);
      if (it == specs.end() && is_passthrough(key)) {
        std::string why;
        auto text = toml_to_text(*node, node->is_array() ? ConfigType::kList
                                        : node->is_string() ? ConfigType::kString
                                        : node->is_boolean() ? ConfigType::kBool
                                        : node->is_integer() ? ConfigType::kInt : ConfigType::kDouble, why);
        if (!text) return key_error(key, origin, why);
        cfg.passthrough_[key] = *text;
        continue;
      }
      if (it == specs.end()) return key_error(key, origin, "unknown key");
      std::string why;
      auto text = toml_to_text(*node, it->second->type, why);
      if (!text) return key_error(key, origin, why);
      if (auto st = assign(key, *text, origin); !st) return std::move(st).error();
    }
  }

  for (const auto& spec : keys) {
    const auto name = env_name(spec.key);
    auto it = sources.environment.find(name);
    if (it == sources.environment.end()) continue;
    if (auto st = assign(spec.key, it->second, "env " + name); !st) return std::move(st).error();
  }

  for (const auto& kv : sources.overrides) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      return Error(ErrorCode::kInvalidArgument, "flag --set expects key=value, got '" + kv + "'")
          .with("flag", kv);
    if (auto st = assign(kv.substr(0, eq), kv.substr(eq + 1), "flag"); !st)
      return std::move(st).error();
  }
  return cfg;
}

const Config::Value& Config::at(const std::string& key) const {
  auto it = values_.find(key);
  if (it == values_.end()) throw std::logic_error("undeclared config key: " + key);
  return it->second;
}

const std::string& Config::str(const std::string& key) const { return at(key).text; }

int64_t Config::integer(const std::string& key) const {
  const auto& v = at(key);
  int64_t out = 0;
  std::from_chars(v.text.data(), v.text.data() + v.text.size(), out);
  return out;
}

bool Config::boolean(const std::string& key) const { return at(key).text == "true"; }

double Config::number(const std::string& key) const { return std::strtod(at(key).text.c_str(), nullptr); }

std::vector<std::string> Config::list(const std::string& key) const {
  std::vector<std::string> out;
  const auto& text = at(key).text;
  size_t start = 0;
  while (start <= text.size() && !text.empty()) {
    const auto comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::map<std::string, std::string> Config::passthrough(const std::string& prefix) const {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : passthrough_)
    if (k.compare(0, prefix.size(), prefix) == 0) out[k.substr(prefix.size())] = v;
  return out;
}

const std::string& Config::origin(const std::string& key) const { return at(key).origin; }

const std::vector<ConfigSection>& Config::sections(const std::string& name) const {
  static const std::vector<ConfigSection> kEmpty;
  auto it = sections_.find(name);
  return it == sections_.end() ? kEmpty : it->second;
}

}  // namespace deeplens
