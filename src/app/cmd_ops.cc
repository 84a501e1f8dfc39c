// Operator commands on the data directory: migrations and dead letters (tenants: cmd_tenants.cc).
#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/runtime.h"
#include "pipeline/ingest.h"

namespace deeplens::app {

void register_ops_commands(CLI::App& root, GlobalFlags& flags, int* exit_code) {
  auto* migrate = root.add_subcommand("migrate", "Apply the metadata store's schema migrations (they also run at every start)");
  migrate->callback([&flags, exit_code] {
    auto rt = open_operator_runtime(flags, exit_code);
    if (!rt) return;
    const std::string url = rt->config.str("metadata.url");
    std::cout << "metadata schema is up to date (" << (url.empty() ? "SQLite in " + rt->config.str("data_dir") : redact_secrets(url))
              << ")\n";
  });

  auto* dlq = root.add_subcommand("dlq", "Dead letters: events that failed for good");
  dlq->require_subcommand(1);
  auto all_flag = std::make_shared<bool>(false);
  auto* dlq_list = dlq->add_subcommand("list", "List dead letters (a table; --json: one JSON object per line)");
  dlq_list->add_flag("--all", *all_flag, "Include replayed ones");
  auto as_json = std::make_shared<bool>(false);
  dlq_list->add_flag("--json", *as_json, "One JSON object per dead letter and line, for scripts");
  dlq_list->callback([&flags, all_flag, as_json, exit_code] {
    auto rt = open_operator_runtime(flags, exit_code);
    if (!rt) return;
    auto letters = rt->node->store().list_dead_letters(*all_flag, 10000);
    if (!letters) {
      std::cerr << "error: " << letters.error().message << "\n";
      *exit_code = 1;
      return;
    }
    if (!*as_json && !letters->empty()) std::cout << "ID\tIMAGE\tTENANT\tSTAGE\tERROR\tATTEMPTS\tCREATED\tREPLAYED\n";
    for (const auto& d : *letters) {
      if (!*as_json) {
        std::cout << d.id << "\t" << d.image_id << "\t" << d.tenant_id << "\t" << d.stage << "\t" << d.error_code << ": "
                  << d.error_message << "\t" << d.attempts << "\t" << format_iso8601(d.created_at) << "\t"
                  << (d.replayed_at ? format_iso8601(*d.replayed_at) : "-") << "\n";
        continue;
      }
      nlohmann::ordered_json j{{"id", d.id}, {"imageId", d.image_id}, {"tenantId", d.tenant_id}, {"stage", d.stage},
                               {"topic", d.topic}, {"errorCode", d.error_code}, {"errorMessage", d.error_message},
                               {"attempts", d.attempts}, {"createdAt", format_iso8601(d.created_at)},
                               {"replayedAt", d.replayed_at ? nlohmann::json(format_iso8601(*d.replayed_at)) : nlohmann::json()}};
      std::cout << j.dump() << "\n";
    }
    if (letters->empty()) std::cerr << "no dead letters\n";
  });
  auto id = std::make_shared<int64_t>(0);
  auto replay_all = std::make_shared<bool>(false);
  auto* replay = dlq->add_subcommand("replay", "Re-drive dead letters (after fixing the cause)");
  replay->add_option("id", *id, "Dead letter id (see dlq list)");
  replay->add_flag("--all", *replay_all, "Replay every dead letter not yet replayed");
  replay->callback([&flags, id, replay_all, exit_code] {
    if (!*replay_all && *id <= 0) {
      std::cerr << "error: give a dead letter id or --all\n";
      *exit_code = 2;
      return;
    }
    auto rt = open_operator_runtime(flags, exit_code);
    if (!rt) return;
    int replayed = 0;
    if (*replay_all) {
      auto outcome = replay_dead_letters(rt->node->context(), "");
      if (!outcome) {
        std::cerr << "error: " << outcome.error().message << "\n";
        *exit_code = 1;
        return;
      }
      replayed = outcome->replayed;
      for (const auto& [letter, error] : outcome->failed) std::cerr << "dead letter " << letter << ": " << error.message << "\n";
      if (!outcome->failed.empty()) *exit_code = 1;
    } else if (auto st = replay_dead_letter(rt->node->context(), *id); !st) {
      std::cerr << "dead letter " << *id << ": " << st.error().message << "\n";
      *exit_code = 1;
    } else {
      replayed = 1;
    }
    std::cout << "replayed " << replayed << " dead letter(s)\n";
  });
}

}  // namespace deeplens::app
