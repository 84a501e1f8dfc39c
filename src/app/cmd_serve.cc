// `deeplens serve`: API, pipeline stages and (embedded) event log in one process. Ctrl-C or
// SIGTERM: stop accepting, finish requests in flight, then stop the stages (each finishes the
// batch in hand; anything not committed is redone at the next start).
#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>

#include "app/commands.h"
#include "app/runtime.h"
#include "common/log.h"

namespace deeplens::app {

namespace {

int serve(GlobalFlags& flags) {
  // Block the stop signals before any thread starts, so every thread inherits the mask and the
  // main thread alone receives them in sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto rt = open_runtime(flags, RuntimeParts::kFull);
  if (!rt) {
    std::cerr << "error: " << rt.error().message << "\n";
    return 2;
  }
  auto key = ensure_default_tenant(**rt);
  if (!key) {
    std::cerr << "error: " << key.error().message << "\n";
    return 2;
  }
  Node& node = *(*rt)->node;
  if (auto st = node.start_pipeline(); !st) {
    std::cerr << "error: cannot start the pipeline: " << st.error().message << "\n";
    return 1;
  }
  api::ApiService service(node.context(), node.bus(), api_options((*rt)->config, *(*rt)->models));
  api::HttpServer server(
      server_options((*rt)->config), [&](api::HttpRequest& r) { return service.handle(r); },
      [&](const std::string& m, const std::string& p) { return service.spools(m, p); });
  if (auto st = server.start(); !st) {
    std::cerr << "error: " << st.error().message << "\n";
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
  server.stop();  // finish requests in flight first
  node.stop();    // then the stages
  log_info("serve.stopped");
  return 0;
}

}  // namespace

void register_serve_command(CLI::App& root, GlobalFlags& flags, int* exit_code) {
  auto* cmd = root.add_subcommand("serve", "Run everything in one process on the embedded backends (zero infrastructure)");
  auto data_dir = std::make_shared<std::string>();
  auto listen = std::make_shared<std::string>();
  cmd->add_option("--data-dir", *data_dir, "Data directory (config data_dir, default ./deeplens-data)");
  cmd->add_option("--listen", *listen, "HOST:PORT to listen on (config server.listen, default 127.0.0.1:8080)");
  cmd->callback([&flags, data_dir, listen, exit_code] {
    if (!data_dir->empty()) flags.overrides.push_back("data_dir=" + *data_dir);
    if (!listen->empty()) flags.overrides.push_back("server.listen=" + *listen);
    *exit_code = serve(flags);
  });
}

}  // namespace deeplens::app
