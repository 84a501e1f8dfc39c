// `deeplens config`: the effective configuration, each key with its value and origin; with
// --reference, the Markdown table of every key used in the README.
#include <CLI/CLI.hpp>
#include <iostream>

#include "app/commands.h"
#include "app/global_flags.h"
#include "app/settings.h"

namespace deeplens::app {

void register_config_command(CLI::App& root, GlobalFlags& flags, int* exit_code) {
  auto* cmd = root.add_subcommand("config", "Show the effective configuration and where each value came from");
  auto reference = std::make_shared<bool>(false);
  cmd->add_flag("--reference", *reference, "Print the Markdown reference of every key");
  cmd->callback([&flags, reference, exit_code] {
    if (*reference) {
      std::cout << "| key | environment | default | meaning |\n|---|---|---|---|\n";
      for (const auto& k : config_keys())
        std::cout << "| `" << k.key << "` | `" << Config::env_name(k.key) << "` | `" << k.default_value
                  << "` | " << k.help << " |\n";
      return;
    }
    auto config = load_config(flags);
    if (!config) {
      std::cerr << "error: " << config.error().message << "\n";
      *exit_code = 2;
      return;
    }
    for (const auto& k : config_keys())
      std::cout << k.key << " = " << redact_config_value(k.key, config->str(k.key)) << "    # " << config->origin(k.key)
                << "\n";
    for (const auto& [k, v] : config->passthrough("kafka."))
      std::cout << "kafka." << k << " = " << redact_config_value(k, v) << "    # passed to librdkafka\n";
  });
}

}  // namespace deeplens::app
