// The deeplens binary: one executable, many subcommands (ARCHITECTURE.md).
#include <CLI/CLI.hpp>
#include <malloc.h>
#include <sys/resource.h>

#include <cstdlib>
#include <iostream>

#include "app/commands.h"
#include "app/global_flags.h"
#include "app/settings.h"

#ifndef DEEPLENS_VERSION
#define DEEPLENS_VERSION "0.0.0"
#endif


int main(int argc, char** argv) {
  using namespace deeplens::app;
  // glibc gives every thread that allocates its own arena (up to 8 per core) and keeps freed memory
  // in them; with ~30 threads (HTTP pool, stages, librdkafka, libvips) the server's RSS crept up
  // ~1 KB per image beyond the vector index. Two arenas kept it flat at the same upload latency
  // (bench/README.md, "Memory"). The environment variable MALLOC_ARENA_MAX still wins.
  if (!std::getenv("MALLOC_ARENA_MAX")) mallopt(M_ARENA_MAX, 2);
  // Every connection is a descriptor and server.max_connections defaults to 4096: take the hard
  // limit (the soft one is often 1024) so that the server's own limits, not EMFILE, decide.
  if (rlimit nofile{}; getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  CLI::App root{"DeepLens: image ingestion and visual search on an asynchronous event pipeline."};
  root.set_version_flag("--version", std::string("deeplens ") + DEEPLENS_VERSION);
  root.require_subcommand(1);
  root.fallthrough();  // --config and --set may also follow the subcommand
  root.footer("Configuration: defaults < --config FILE (TOML) < DEEPLENS_* environment < --set key=value.\n"
              "Run `deeplens config` to see every key. Docs: README.md and ARCHITECTURE.md.");
  GlobalFlags flags;
  root.add_option("--config", flags.config_file, "TOML configuration file (or DEEPLENS_CONFIG)");
  root.add_option("--data-dir", flags.data_dir, "Data directory (config data_dir) for any subcommand");
  root.add_option("--set", flags.overrides, "Override a configuration key: --set key=value (repeatable)");

  int exit_code = 0;
  register_serve_command(root, flags, &exit_code);
  register_client_commands(root, &exit_code);
  register_ops_commands(root, flags, &exit_code);
  register_tenant_commands(root, flags, &exit_code);
  register_events_command(root, &exit_code);
  register_config_command(root, flags, &exit_code);
  register_dev_kafka_command(root, &exit_code);
  register_doctor_command(root, flags, &exit_code);
  register_completion_command(root, &exit_code);  // last: it describes every command above

  try {
    root.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return root.exit(e);
  }
  return exit_code;
}
