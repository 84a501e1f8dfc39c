// `deeplens serve` (API, relay and every stage in one process), `deeplens api` (HTTP + relay +
// the stages that own the vector index) and `deeplens worker --stages ...` (stages only; scale out
// by running more). Ctrl-C or SIGTERM: stop accepting, finish requests in flight, then stop the
// stages (each finishes the batch in hand; anything not committed is redone at the next start).
#include <CLI/CLI.hpp>
#include <csignal>
#include <filesystem>
#include <optional>
#include <iostream>

#include "app/commands.h"
#include "api/push_feed.h"
#include "app/runtime.h"
#include "common/log.h"
#include "webhooks/dispatcher.h"
#include "webhooks/secret_box.h"

namespace deeplens::app {

namespace {

int serve(GlobalFlags& flags, Role role, const std::string& stage_list) {
  // Block the stop signals before any thread starts, so every thread inherits the mask and the
  // main thread alone receives them in sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto stages = StageSet::parse(stage_list);
  if (!stages) {
    std::cerr << "error: --stages: " << stages.error().message << "\n";
    return 2;
  }
  auto rt = open_runtime(flags, role, *stages);
  if (!rt) {
    std::cerr << "error: " << rt.error().message << "\n";
    return 2;
  }
  Node& node = *(*rt)->node;
  if (auto st = node.start_pipeline(); !st) {
    std::cerr << "error: cannot start the pipeline: " << st.error().message << "\n";
    return 1;
  }
  if (role == Role::kWorker) {
    std::cout << "DeepLens worker running stages: " << stage_list << " (bus: "
              << ((*rt)->config.str("bus.url").empty() ? "embedded" : (*rt)->config.str("bus.url")) << ")\n"
              << "Press Ctrl-C to stop." << std::endl;
    int sig = 0;
    sigwait(&stop_signals, &sig);
    log_info("worker.stopping", {{"signal", sig}});
    node.stop();
    return 0;
  }
  // Only processes that serve HTTP create the default tenant and print its key.
  auto key = ensure_default_tenant(**rt);
  if (!key) {
    std::cerr << "error: " << key.error().message << "\n";
    node.stop();
    return 2;
  }
  // Real-time: every HTTP process hears every event (a broadcast consumer), whichever took the upload.
  api::PushHub hub(push_options((*rt)->config), node.context().clock);
  api::PushFeedOptions feed_options;
  feed_options.clock = &node.context().clock;
  feed_options.status = StatusOptions{node.context().options.lane_weights, &node.context().clock};
  api::PushFeed feed(node.bus(), node.store(), hub, node.metrics(), feed_options);
  if (auto st = feed.start(); !st) {
    std::cerr << "error: cannot start the real-time feed: " << st.error().message << "\n";
    node.stop();
    return 1;
  }
  api::ApiService service(node.context(), node.bus(), api_options((*rt)->config, *(*rt)->models), &hub);
  // Webhooks: the routes and a dispatcher in every HTTP process (they share the queue by leases).
  const Config& config = (*rt)->config;
  std::optional<webhooks::SecretBox> secrets;
  std::unique_ptr<webhooks::WebhookDispatcher> dispatcher;
  if (config.boolean("webhooks.enabled")) {
    const std::string key_file = config.str("webhooks.secrets_key_file").empty()
                                     ? (std::filesystem::path(config.str("data_dir")) / "webhook-secrets.key").string()
                                     : config.str("webhooks.secrets_key_file");
    auto box = webhooks::SecretBox::from_file(key_file, (*rt)->random);
    if (!box) {
      std::cerr << "error: webhooks.secrets_key_file: " << box.error().to_string() << "\n";
      feed.stop();
      node.stop();
      return 2;
    }
    secrets.emplace(std::move(box).value());
    webhooks::DispatcherOptions options;
    try {
      options = dispatcher_options(config);
    } catch (const std::exception& e) {
      std::cerr << "error: " << e.what() << "\n";
      feed.stop();
      node.stop();
      return 2;
    }
    options.owner = "dispatcher-" + node.context().ids.hex(8);
    dispatcher = std::make_unique<webhooks::WebhookDispatcher>(node.store().webhooks(), *secrets, node.context().clock,
                                                               (*rt)->random, node.metrics(), options);
    if (auto st = dispatcher->start(); !st) {
      std::cerr << "error: cannot start the webhook dispatcher: " << st.error().message << "\n";
      feed.stop();
      node.stop();
      return 1;
    }
    api::WebhookApiContext wh;
    wh.secrets = &*secrets;
    wh.random = &(*rt)->random;
    wh.max_per_tenant = static_cast<int>(config.integer("webhooks.max_per_tenant"));
    wh.allow_private_networks = config.boolean("webhooks.allow_private_networks");
    wh.secret_overlap = std::chrono::seconds(std::max<int64_t>(0, config.integer("webhooks.secret_overlap_s")));
    wh.kick = [d = dispatcher.get()] { d->notify(); };
    service.enable_webhooks(std::move(wh));
  }
  api::HttpServer server(
      server_options((*rt)->config), [&](api::HttpRequest& r) { return service.handle(r); },
      [&](api::HttpRequest& r) { return service.admit(r); });
  if (auto st = server.start(); !st) {
    std::cerr << "error: " << st.error().message << "\n";
    if (dispatcher) dispatcher->stop();
    feed.stop();
    node.stop();
    return 1;
  }
  const std::string listen = (*rt)->config.str("server.listen");
  const std::string host = listen.substr(0, listen.rfind(':'));
  const std::string url = "http://" + (host == "0.0.0.0" ? std::string("127.0.0.1") : host) + ":" + std::to_string(server.port());
  const std::string tenant = (*rt)->config.str("auth.default_tenant");
  std::cout << "DeepLens is serving on " << url << "\n"
            << "  data directory: " << (*rt)->config.str("data_dir") << "\n"
            << "  models: ";
  for (const auto& m : (*rt)->models->names()) std::cout << m << (m == (*rt)->models->default_model() ? " (default) " : " ");
  std::cout << "\n";
  if (!key->empty())
    std::cout << "  API key for tenant '" << tenant << "' (shown once, keep it): " << *key << "\n";
  else if (!(*rt)->config.str("auth.default_key").empty())
    std::cout << "  API key for tenant '" << tenant << "': from auth.default_key\n";
  else
    std::cout << "  tenant '" << tenant << "' exists; its key was printed at first start (new key: deeplens tenants create NAME)\n";
  std::cout << "  try: curl -H 'Authorization: Bearer KEY' -F file=@photo.jpg " << url << "/api/v1/images/upload\n"
            << "Press Ctrl-C to stop." << std::endl;
  log_info("serve.started", {{"url", url}, {"dataDir", (*rt)->config.str("data_dir")}});

  int sig = 0;
  sigwait(&stop_signals, &sig);
  log_info("serve.stopping", {{"signal", sig}});
  server.stop();  // finish requests in flight first (streams close with 1001)
  if (dispatcher) dispatcher->stop();
  feed.stop();
  node.stop();    // then the stages
  log_info("serve.stopped");
  return 0;
}

}  // namespace

void register_serve_command(CLI::App& root, GlobalFlags& flags, int* exit_code) {
  struct Spec {
    const char* name;
    const char* help;
    Role role;
    const char* default_stages;
  };
  static const Spec kSpecs[] = {
      {"serve", "Run everything in one process (embedded backends by default: zero infrastructure)", Role::kServe, "all"},
      {"api", "Run the HTTP API, the outbox relay and the stages that own the vector index", Role::kApi,
       "orchestrate,index,notify,retry"},
      {"worker", "Run pipeline stages (default: extract,thumbnail); scale out by running more workers", Role::kWorker,
       "extract,thumbnail"},
  };
  for (const auto& spec : kSpecs) {
    auto* cmd = root.add_subcommand(spec.name, spec.help);
    auto data_dir = std::make_shared<std::string>();
    auto listen = std::make_shared<std::string>();
    auto bus = std::make_shared<std::string>();
    auto metadata = std::make_shared<std::string>();
    auto stages = std::make_shared<std::string>(spec.default_stages);
    cmd->add_option("--data-dir", *data_dir, "Data directory (config data_dir, default ./deeplens-data)");
    if (spec.role != Role::kWorker)
      cmd->add_option("--listen", *listen, "HOST:PORT to listen on (config server.listen, default 127.0.0.1:8080)");
    cmd->add_option("--bus", *bus, "Event bus: kafka://HOST:PORT,... (config bus.url; default: embedded log)");
    cmd->add_option("--metadata", *metadata, "Metadata store: postgresql://... (config metadata.url; default: SQLite in the data directory)");
    if (spec.role != Role::kServe)
      cmd->add_option("--stages", *stages, std::string("Stages to run: orchestrate,thumbnail,extract,index,notify,retry (default ") +
                                               spec.default_stages + ")");
    const Role role = spec.role;
    cmd->callback([&flags, data_dir, listen, bus, metadata, stages, role, exit_code] {
      if (!metadata->empty()) flags.overrides.push_back("metadata.url=" + *metadata);
      if (!data_dir->empty()) flags.overrides.push_back("data_dir=" + *data_dir);
      if (!listen->empty()) flags.overrides.push_back("server.listen=" + *listen);
      if (!bus->empty()) flags.overrides.push_back("bus.url=" + *bus);
      *exit_code = serve(flags, role, *stages);
    });
  }
}

}  // namespace deeplens::app
