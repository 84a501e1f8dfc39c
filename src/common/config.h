// Layered configuration: built-in defaults < TOML file < DEEPLENS_* environment < command-line
// flags. Only declared keys exist; a value of the wrong type, or an unknown key in the file or
// in a `--set key=value` flag, is an error that names the key and where it came from.
//
// Keys are dotted ("server.listen"); a key's environment variable is DEEPLENS_ + the key upper-cased
// with '.' replaced by '_' ("DEEPLENS_SERVER_LISTEN"). Lists are TOML arrays of strings, or
// comma-separated in the environment and in flags. Tables of arrays (e.g. [[models]]) are not
// keys: they are read from the file as raw sections (see sections()).
//
// A loaded Config is immutable and safe to read from many threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"

namespace deeplens {

enum class ConfigType { kString, kInt, kBool, kDouble, kList };

// What people see of a setting (`deeplens config`, logs, error messages) with its secrets hidden:
// a key that names a secret (…key, …password, …secret, …token, …credentials) shows "<redacted>"
// unless empty; any other value goes through redact_secrets.
std::string redact_config_value(std::string_view key, std::string_view value);
// text with URL passwords ("postgresql://app:<redacted>@db/x") and secret-looking key=value pairs
// of connection strings (AccountKey=, SharedAccessSignature=, password=, sig=) hidden.
std::string redact_secrets(std::string_view text);

struct ConfigKeySpec {
  std::string key;
  ConfigType type;
  std::string default_value;  // textual, parsed like an environment value
  std::string help;
};

// One [[name]] entry of the file, flattened to key -> textual value (lists comma-joined).
using ConfigSection = std::map<std::string, std::string>;

struct ConfigSources {
  std::optional<std::filesystem::path> file;      // TOML; absent = defaults only
  std::map<std::string, std::string> environment;  // usually the process environment
  std::vector<std::string> overrides;              // "key=value" from --set and friends
  std::vector<std::string> section_names;          // array-of-tables names allowed in the file
  // Undeclared keys under these prefixes (e.g. "kafka.") are kept as raw strings instead of
  // being errors: settings passed through to a library (file and --set only).
  std::vector<std::string> passthrough_prefixes;
};

class Config {
 public:
  static Result<Config> load(std::span<const ConfigKeySpec> keys, const ConfigSources& sources);

  // The process environment as a map (only DEEPLENS_* variables).
  static std::map<std::string, std::string> process_environment();

  // Typed reads of a declared key. Reading an undeclared key is a programmer error (throws).
  const std::string& str(const std::string& key) const;
  int64_t integer(const std::string& key) const;
  bool boolean(const std::string& key) const;
  double number(const std::string& key) const;
  std::vector<std::string> list(const std::string& key) const;

  // Where the effective value came from: "default", "file <path>", "env DEEPLENS_X", "flag".
  const std::string& origin(const std::string& key) const;

  // The [[name]] array-of-tables entries of the file, in file order.
  const std::vector<ConfigSection>& sections(const std::string& name) const;

  static std::string env_name(const std::string& key);

  // Passthrough settings under prefix ("kafka." -> {"security.protocol": "SASL_SSL", ...}).
  std::map<std::string, std::string> passthrough(const std::string& prefix) const;

 private:
  struct Value {
    ConfigType type;
    std::string text;
    std::string origin;
  };
  const Value& at(const std::string& key) const;

  std::map<std::string, Value> values_;
  std::map<std::string, std::vector<ConfigSection>> sections_;
  std::map<std::string, std::string> passthrough_;
};

}  // namespace deeplens
