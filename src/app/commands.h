// Subcommands of the `deeplens` binary. Each register_* adds one subcommand (and its flags) to
// the CLI11 app; the callback it installs sets *exit_code. Kept apart so main.cc stays a table.
#pragma once

namespace CLI {
class App;
}

namespace deeplens::app {

struct GlobalFlags;

void register_events_command(CLI::App& root, int* exit_code);
void register_config_command(CLI::App& root, GlobalFlags& flags, int* exit_code);
void register_serve_command(CLI::App& root, GlobalFlags& flags, int* exit_code);
void register_ops_commands(CLI::App& root, GlobalFlags& flags, int* exit_code);
void register_tenant_commands(CLI::App& root, GlobalFlags& flags, int* exit_code);
void register_client_commands(CLI::App& root, int* exit_code);
void register_dev_kafka_command(CLI::App& root, int* exit_code);
void register_doctor_command(CLI::App& root, GlobalFlags& flags, int* exit_code);
void register_completion_command(CLI::App& root, int* exit_code);

}  // namespace deeplens::app
