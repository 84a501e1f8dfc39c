// Every configuration key DeepLens reads, with its default and help text: the single source for
// `deeplens config` and the README's configuration reference. Components get plain option structs
// built from a loaded Config here; only app/ knows the keys.
#pragma once

#include <span>

#include "common/config.h"
#include "common/log.h"

namespace deeplens::app {

std::span<const ConfigKeySpec> config_keys();

// Names of the [[section]] arrays the config file may hold.
std::vector<std::string> config_sections();

Result<LogOptions> log_options(const Config& config);

}  // namespace deeplens::app
