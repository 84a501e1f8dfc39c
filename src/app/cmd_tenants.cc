// `deeplens tenants ...`: tenants, their limits and their API keys, on the data directory (or the
// PostgreSQL store), also while the server runs: a revoked key stops working in every serving
// process within ApiOptions::key_cache_ttl.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <cstdio>
#include <iostream>

#include "app/commands.h"
#include "app/runtime.h"

namespace deeplens::app {

namespace {

bool fail(const Error& e, int* exit_code, int code = 1) {
  std::cerr << "error: " << e.message << "\n";
  *exit_code = code;
  return false;
}

// --max-images etc. as typed: a number, or "default" to fall back to the configured limits.*.
struct LimitFlags {
  std::string max_images, max_bytes, upload_rate, search_rate;

  void add_to(CLI::App* cmd) {
    cmd->add_option("--max-images", max_images, "Images stored at once (0 = unlimited, 'default' = limits.max_images)");
    cmd->add_option("--max-bytes", max_bytes, "Bytes of original images stored at once (0 = unlimited, 'default')");
    cmd->add_option("--upload-rate", upload_rate, "Uploads per second (0 = unlimited, 'default' = limits.upload_rate)");
    cmd->add_option("--search-rate", search_rate, "Searches per second (0 = unlimited, 'default')");
  }

  // Applies the flags given onto limits; an error names the flag.
  Status apply(TenantLimits& limits) const {
    auto integer = [](const std::string& flag, const std::string& text, std::optional<int64_t>& out) -> Status {
      if (text.empty()) return {};
      if (text == "default") {
        out.reset();
        return {};
      }
      char* end = nullptr;
      const long long v = std::strtoll(text.c_str(), &end, 10);
      if (*end != '\0' || v < 0) return Error(ErrorCode::kInvalidArgument, flag + " must be a whole number >= 0 or 'default', got '" + text + "'");
      out = v;
      return {};
    };
    auto real = [](const std::string& flag, const std::string& text, std::optional<double>& out) -> Status {
      if (text.empty()) return {};
      if (text == "default") {
        out.reset();
        return {};
      }
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (*end != '\0' || !(v >= 0)) return Error(ErrorCode::kInvalidArgument, flag + " must be a number >= 0 or 'default', got '" + text + "'");
      out = v;
      return {};
    };
    if (auto st = integer("--max-images", max_images, limits.max_images); !st) return st;
    if (auto st = integer("--max-bytes", max_bytes, limits.max_bytes); !st) return st;
    if (auto st = real("--upload-rate", upload_rate, limits.upload_rate); !st) return st;
    return real("--search-rate", search_rate, limits.search_rate);
  }
};

std::string limit_text(const std::optional<int64_t>& own, int64_t fallback) {
  const int64_t v = own.value_or(fallback);
  std::string text = v == 0 ? "unlimited" : std::to_string(v);
  return own ? text : text + " (default)";
}

std::string rate_text(const std::optional<double>& own, double fallback) {
  const double v = own.value_or(fallback);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g/s", v);
  std::string text = v == 0 ? "unlimited" : buf;
  return own ? text : text + " (default)";
}

// "30d", "12h", "90m", "3600s".
Result<std::chrono::seconds> parse_duration(const std::string& text) {
  char* end = nullptr;
  const double n = std::strtod(text.c_str(), &end);
  const std::string unit = end ? end : "";
  const double scale = unit == "d" ? 86400 : unit == "h" ? 3600 : unit == "m" ? 60 : unit == "s" ? 1 : 0;
  if (end == text.c_str() || scale == 0 || !(n > 0))
    return Error(ErrorCode::kInvalidArgument, "--expires-in must be a number with d, h, m or s (e.g. 90d), got '" + text + "'");
  return std::chrono::seconds(static_cast<int64_t>(n * scale));
}

std::string key_state(const ApiKey& k, Timestamp now) {
  if (k.revoked_at) return "revoked " + format_iso8601(*k.revoked_at);
  if (k.expires_at && now >= *k.expires_at) return "expired " + format_iso8601(*k.expires_at);
  return "active";
}

}  // namespace

void register_tenant_commands(CLI::App& root, GlobalFlags& flags, int* exit_code) {
  auto* tenants = root.add_subcommand("tenants", "Manage tenants, their limits and their API keys");
  tenants->require_subcommand(1);

  auto slug = std::make_shared<std::string>();
  auto limits = std::make_shared<LimitFlags>();
  auto* create = tenants->add_subcommand("create", "Create a tenant (or a new key for an existing one) and print its API key");
  create->add_option("slug", *slug, "Tenant id: lower-case letters, digits and '-'")->required();
  limits->add_to(create);
  create->callback([&flags, slug, limits, exit_code] {
    if (!valid_tenant_slug(*slug)) {
      std::cerr << "error: '" << *slug << "' is not a valid tenant id (use a-z, 0-9 and '-', at most 63 characters)\n";
      *exit_code = 2;
      return;
    }
    Tenant tenant{*slug, {}, {}, 0, 0};
    if (auto st = limits->apply(tenant.limits); !st) return void(fail(st.error(), exit_code, 2));
    auto rt = open_operator_runtime(flags, exit_code);
    if (!rt) return;
    auto& store = rt->node->store();
    tenant.created_at = rt->clock.now();
    if (auto st = store.create_tenant(tenant); !st) {
      if (st.error().code != ErrorCode::kAlreadyExists) return void(fail(st.error(), exit_code));
      std::cerr << "tenant '" << *slug << "' exists; adding a new key (change limits with `tenants update`)\n";
    }
    auto key = api::create_api_key(store, rt->node->ids(), *slug, "default", rt->clock.now());
    if (!key) return void(fail(key.error(), exit_code));
    std::cout << "tenant: " << *slug << "\nkey id: " << key->info.id << "\napi key: " << key->secret << "\n";
  });

  auto* update = tenants->add_subcommand("update", "Change a tenant's limits (only the flags given change)");
  update->add_option("slug", *slug, "Tenant id")->required();
  limits->add_to(update);
  update->callback([&flags, slug, limits, exit_code] {
    auto rt = open_operator_runtime(flags, exit_code);
    if (!rt) return;
    auto& store = rt->node->store();
    auto tenant = store.get_tenant(*slug);
    if (!tenant) return void(fail(tenant.error(), exit_code));
    TenantLimits next = tenant->limits;
    if (auto st = limits->apply(next); !st) return void(fail(st.error(), exit_code, 2));
    if (auto st = store.set_tenant_limits(*slug, next); !st) return void(fail(st.error(), exit_code));
    std::cout << "tenant " << *slug << " updated\n";
  });

  auto* list = tenants->add_subcommand("list", "List tenants with their usage and limits");
  auto as_json = std::make_shared<bool>(false);
  list->add_flag("--json", *as_json, "One JSON object per tenant and line (limits: null = unlimited), for scripts");
  list->callback([&flags, as_json, exit_code] {
    auto rt = open_operator_runtime(flags, exit_code);
    if (!rt) return;
    auto all = rt->node->store().list_tenants();
    if (!all) return void(fail(all.error(), exit_code));
    const Config& c = rt->config;
    if (*as_json) {
      // The effective limit: the tenant's own, else limits.*; 0 means unlimited (null here).
      auto count = [](std::optional<int64_t> own, int64_t fallback) {
        const int64_t v = own.value_or(fallback);
        return v > 0 ? nlohmann::json(v) : nlohmann::json(nullptr);
      };
      auto rate = [](std::optional<double> own, double fallback) {
        const double v = own.value_or(fallback);
        return v > 0 ? nlohmann::json(v) : nlohmann::json(nullptr);
      };
      for (const auto& t : *all)
        std::cout << nlohmann::ordered_json{{"tenantId", t.id},
                                            {"createdAt", format_iso8601(t.created_at)},
                                            {"images", t.image_count},
                                            {"bytes", t.bytes_stored},
                                            {"maxImages", count(t.limits.max_images, c.integer("limits.max_images"))},
                                            {"maxBytes", count(t.limits.max_bytes, c.integer("limits.max_bytes"))},
                                            {"uploadRate", rate(t.limits.upload_rate, c.number("limits.upload_rate"))},
                                            {"searchRate", rate(t.limits.search_rate, c.number("limits.search_rate"))}}
                         .dump()
                  << "\n";
      return;
    }
    std::cout << "TENANT\tCREATED\tIMAGES\tMAX IMAGES\tBYTES\tMAX BYTES\tUPLOAD RATE\tSEARCH RATE\n";
    for (const auto& t : *all)
      std::cout << t.id << "\t" << format_iso8601(t.created_at) << "\t" << t.image_count << "\t"
                << limit_text(t.limits.max_images, c.integer("limits.max_images")) << "\t" << t.bytes_stored << "\t"
                << limit_text(t.limits.max_bytes, c.integer("limits.max_bytes")) << "\t"
                << rate_text(t.limits.upload_rate, c.number("limits.upload_rate")) << "\t"
                << rate_text(t.limits.search_rate, c.number("limits.search_rate")) << "\n";
  });

  auto* keys = tenants->add_subcommand("keys", "A tenant's API keys: list, create, revoke");
  keys->require_subcommand(1);
  auto* keys_list = keys->add_subcommand("list", "List a tenant's keys (never the keys themselves)");
  keys_list->add_option("slug", *slug, "Tenant id")->required();
  keys_list->callback([&flags, slug, exit_code] {
    auto rt = open_operator_runtime(flags, exit_code);
    if (!rt) return;
    if (auto t = rt->node->store().get_tenant(*slug); !t) return void(fail(t.error(), exit_code));
    auto all = rt->node->store().list_api_keys(*slug);
    if (!all) return void(fail(all.error(), exit_code));
    const Timestamp now = rt->clock.now();
    std::cout << "KEY ID\tNAME\tPREFIX\tCREATED\tLAST USED\tEXPIRES\tSTATE\n";
    for (const auto& k : *all)
      std::cout << k.id << "\t" << (k.name.empty() ? "-" : k.name) << "\t" << (k.prefix.empty() ? "-" : k.prefix + "...")
                << "\t" << format_iso8601(k.created_at) << "\t"
                << (k.last_used_at ? format_iso8601(*k.last_used_at) : "never") << "\t"
                << (k.expires_at ? format_iso8601(*k.expires_at) : "never") << "\t" << key_state(k, now) << "\n";
  });

  auto name = std::make_shared<std::string>("cli");
  auto expires_in = std::make_shared<std::string>();
  auto expires_at = std::make_shared<std::string>();
  auto* keys_create = keys->add_subcommand("create", "Create a key and print it (shown once)");
  keys_create->add_option("slug", *slug, "Tenant id")->required();
  keys_create->add_option("--name", *name, "A label for the key (e.g. the service that uses it)");
  keys_create->add_option("--expires-in", *expires_in, "Lifetime, e.g. 90d, 12h");
  keys_create->add_option("--expires-at", *expires_at, "Expiry as ISO-8601 UTC, e.g. 2027-01-01T00:00:00Z");
  keys_create->callback([&flags, slug, name, expires_in, expires_at, exit_code] {
    auto rt = open_operator_runtime(flags, exit_code);
    if (!rt) return;
    const Timestamp now = rt->clock.now();
    std::optional<Timestamp> expiry;
    if (!expires_in->empty()) {
      auto d = parse_duration(*expires_in);
      if (!d) return void(fail(d.error(), exit_code, 2));
      expiry = now + *d;
    } else if (!expires_at->empty()) {
      auto t = parse_iso8601(*expires_at);
      if (!t) return void(fail(Error(ErrorCode::kInvalidArgument, "--expires-at: " + t.error().message), exit_code, 2));
      expiry = *t;
    }
    if (auto t = rt->node->store().get_tenant(*slug); !t) return void(fail(t.error(), exit_code));
    auto key = api::create_api_key(rt->node->store(), rt->node->ids(), *slug, *name, now, expiry);
    if (!key) return void(fail(key.error(), exit_code));
    std::cout << "key id: " << key->info.id << "\napi key: " << key->secret << "\n";
  });

  auto key_id = std::make_shared<std::string>();
  auto* keys_revoke = keys->add_subcommand("revoke", "Revoke a key: every process refuses it within a second");
  keys_revoke->add_option("slug", *slug, "Tenant id")->required();
  keys_revoke->add_option("key_id", *key_id, "The key's id (see tenants keys list)")->required();
  keys_revoke->callback([&flags, slug, key_id, exit_code] {
    auto rt = open_operator_runtime(flags, exit_code);
    if (!rt) return;
    if (auto st = rt->node->store().revoke_api_key(*slug, *key_id, rt->clock.now()); !st)
      return void(fail(st.error(), exit_code));
    std::cout << "revoked " << *key_id << "\n";
  });
}

}  // namespace deeplens::app
