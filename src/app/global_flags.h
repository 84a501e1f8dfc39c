// Flags every subcommand shares: the config file and --set overrides (highest precedence).
#pragma once

#include <string>
#include <vector>

#include "common/config.h"

namespace deeplens::app {

struct GlobalFlags {
  std::string config_file;             // --config PATH (or DEEPLENS_CONFIG)
  std::vector<std::string> overrides;  // --set key=value, repeatable
  std::string data_dir;                // --data-dir PATH: the same as --set data_dir=PATH
};

// Loads the configuration: defaults < file < DEEPLENS_* env < --set.
Result<Config> load_config(const GlobalFlags& flags);

}  // namespace deeplens::app
