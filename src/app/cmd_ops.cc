// Operator commands on the data directory: tenants, dead letters, and the route table.
#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/runtime.h"
#include "pipeline/ingest.h"

namespace deeplens::app {

namespace {

std::unique_ptr<Runtime> open_or_report(GlobalFlags& flags, int* exit_code) {
  auto rt = open_runtime(flags, Role::kOperator);
  if (!rt) {
    std::cerr << "error: " << rt.error().message << "\n";
    *exit_code = 2;
    return nullptr;
  }
  return std::move(rt).value();
}

}  // namespace

void register_ops_commands(CLI::App& root, GlobalFlags& flags, int* exit_code) {
  auto* tenants = root.add_subcommand("tenants", "Manage tenants and their API keys");
  tenants->require_subcommand(1);
  auto slug = std::make_shared<std::string>();
  auto* create = tenants->add_subcommand("create", "Create a tenant (or a new key for an existing one) and print its API key");
  create->add_option("slug", *slug, "Tenant id: lower-case letters, digits and '-'")->required();
  create->callback([&flags, slug, exit_code] {
    if (!valid_tenant_slug(*slug)) {
      std::cerr << "error: '" << *slug << "' is not a valid tenant id (use a-z, 0-9 and '-', at most 63 characters)\n";
      *exit_code = 2;
      return;
    }
    auto rt = open_or_report(flags, exit_code);
    if (!rt) return;
    auto& store = rt->node->store();
    if (auto st = store.create_tenant(Tenant{*slug, rt->clock.now()}); !st && st.error().code != ErrorCode::kAlreadyExists) {
      std::cerr << "error: " << st.error().message << "\n";
      *exit_code = 1;
      return;
    }
    auto key = api::create_api_key(store, rt->node->ids(), *slug);
    if (!key) {
      std::cerr << "error: " << key.error().message << "\n";
      *exit_code = 1;
      return;
    }
    std::cout << "tenant: " << *slug << "\napi key: " << *key << "\n";
  });
  auto* list = tenants->add_subcommand("list", "List tenants");
  list->callback([&flags, exit_code] {
    auto rt = open_or_report(flags, exit_code);
    if (!rt) return;
    auto all = rt->node->store().list_tenants();
    if (!all) {
      std::cerr << "error: " << all.error().message << "\n";
      *exit_code = 1;
      return;
    }
    for (const auto& t : *all) std::cout << t.id << "\t" << format_iso8601(t.created_at) << "\n";
  });

  auto* migrate = root.add_subcommand("migrate", "Apply the metadata store's schema migrations (they also run at every start)");
  migrate->callback([&flags, exit_code] {
    auto rt = open_or_report(flags, exit_code);
    if (!rt) return;
    const std::string url = rt->config.str("metadata.url");
    std::cout << "metadata schema is up to date (" << (url.empty() ? "SQLite in " + rt->config.str("data_dir") : url)
              << ")\n";
  });

  auto* dlq = root.add_subcommand("dlq", "Dead letters: events that failed for good");
  dlq->require_subcommand(1);
  auto all_flag = std::make_shared<bool>(false);
  auto* dlq_list = dlq->add_subcommand("list", "List dead letters as JSON lines");
  dlq_list->add_flag("--all", *all_flag, "Include replayed ones");
  dlq_list->callback([&flags, all_flag, exit_code] {
    auto rt = open_or_report(flags, exit_code);
    if (!rt) return;
    auto letters = rt->node->store().list_dead_letters(*all_flag, 10000);
    if (!letters) {
      std::cerr << "error: " << letters.error().message << "\n";
      *exit_code = 1;
      return;
    }
    for (const auto& d : *letters) {
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
    auto rt = open_or_report(flags, exit_code);
    if (!rt) return;
    std::vector<int64_t> ids;
    if (*replay_all) {
      auto letters = rt->node->store().list_dead_letters(false, 100000);
      if (!letters) {
        std::cerr << "error: " << letters.error().message << "\n";
        *exit_code = 1;
        return;
      }
      for (const auto& d : *letters) ids.push_back(d.id);
    } else {
      ids.push_back(*id);
    }
    int replayed = 0;
    for (int64_t i : ids) {
      if (auto st = replay_dead_letter(rt->node->context(), i); !st) {
        std::cerr << "dead letter " << i << ": " << st.error().message << "\n";
        *exit_code = 1;
      } else {
        ++replayed;
      }
    }
    std::cout << "replayed " << replayed << " dead letter(s)\n";
  });
}

}  // namespace deeplens::app
