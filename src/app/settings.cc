#include "app/settings.h"

#include <array>
#include <cstdlib>

#include "app/global_flags.h"

namespace deeplens::app {

namespace {
using enum ConfigType;

const std::array kKeys = {
    ConfigKeySpec{"log.level", kString, "info", "debug, info, warn or error"},
    ConfigKeySpec{"log.format", kString, "json", "json (one object per line) or text"},
};
}  // namespace

std::span<const ConfigKeySpec> config_keys() { return kKeys; }

std::vector<std::string> config_sections() { return {"models"}; }

Result<Config> load_config(const GlobalFlags& flags) {
  ConfigSources sources;
  std::string file = flags.config_file;
  if (file.empty()) {
    if (const char* env = std::getenv("DEEPLENS_CONFIG")) file = env;
  }
  if (!file.empty()) sources.file = file;
  sources.environment = Config::process_environment();
  sources.environment.erase("DEEPLENS_CONFIG");
  sources.overrides = flags.overrides;
  sources.section_names = config_sections();
  return Config::load(config_keys(), sources);
}


Result<LogOptions> log_options(const Config& config) {
  LogOptions out;
  if (!parse_log_level(config.str("log.level"), out.level))
    return Error(ErrorCode::kInvalidArgument,
                 "config key 'log.level' (" + config.origin("log.level") +
                     "): expected debug, info, warn or error, got '" + config.str("log.level") + "'")
        .with("key", "log.level");
  const auto& format = config.str("log.format");
  if (format != "json" && format != "text")
    return Error(ErrorCode::kInvalidArgument, "config key 'log.format' (" + config.origin("log.format") +
                                                  "): expected json or text, got '" + format + "'")
        .with("key", "log.format");
  out.json = format == "json";
  return out;
}

}  // namespace deeplens::app
