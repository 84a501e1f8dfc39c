// Builds the ModelRegistry from the [[models]] tables of the configuration: the one place that
// knows the Extractor implementations (features/dnn, features/remote, features/builtin).
//
// Every table is validated (parse_model_spec) before any model is loaded, so a typo is reported
// at once; then models load in file order. The built-in descriptor is always registered as
// "builtin", with or without a [[models]] entry for it. The default model is the entry with
// `default = true`, else the first [[models]] entry, else "builtin".
//
// Called once at start-up from one thread; the registry it returns is then read-only and safe to
// share (model_registry.h).
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "common/config.h"
#include "common/result.h"
#include "features/model_registry.h"

namespace deeplens::app {

struct ModelRegistryOptions {
  // Relative `file` / `config_file` paths are resolved against this directory (normally the
  // config file's folder). Empty (default): against the working directory.
  std::filesystem::path base_dir;
};

// Errors name the table and key ("models[1].file: ...", context key = "models[1].file") and the
// model; loading errors keep the extractor's code (kNotFound for a missing model file ...).
Result<std::unique_ptr<ModelRegistry>> build_model_registry(const std::vector<ConfigSection>& models,
                                                            const ModelRegistryOptions& options = {});

}  // namespace deeplens::app
