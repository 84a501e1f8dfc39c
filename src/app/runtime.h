// Runtime: what every server-side subcommand needs, built from the configuration in one place —
// logging, libvips, the model registry and the Node (backends + stages). Also the small parsers
// from config keys to component option structs.
#pragma once

#include <memory>

#include "api/api_service.h"
#include "api/http_server.h"
#include "app/global_flags.h"
#include "app/node.h"
#include "common/config.h"
#include "features/model_registry.h"
#include "webhooks/dispatcher.h"

namespace deeplens::app {

struct Runtime {
  explicit Runtime(Config c) : config(std::move(c)) {}
  Config config;
  SystemClock clock;
  SystemRandom random;
  std::unique_ptr<ModelRegistry> models;
  std::unique_ptr<Node> node;
};

// Which process this is: what it opens and runs.
//   kOperator  metadata only (tenants, dlq): no models, no vectors, no bus connection
//   kServe     everything: HTTP, relay, every stage, vectors
//   kApi       HTTP + relay + `stages` (default orchestrate,index,notify,retry); vectors iff index
//   kWorker    `stages` (default extract,thumbnail) + relay; vectors iff index
enum class Role { kOperator, kServe, kApi, kWorker };

// Loads config, initialises logging/imaging/models and opens the node. Errors name the key.
Result<std::unique_ptr<Runtime>> open_runtime(const GlobalFlags& flags, Role role, const StageSet& stages = {});

// open_runtime(flags, kOperator) for an operator command: on failure prints the error, sets
// *exit_code to 2 and returns nullptr.
std::unique_ptr<Runtime> open_operator_runtime(const GlobalFlags& flags, int* exit_code);

// bus.url -> Kafka options (nullopt for the embedded log); errors name the key.
Result<std::optional<KafkaBusOptions>> kafka_options(const Config& c);

// blobs.url -> Azure Blob Storage options (nullopt for local files); errors name the key and
// never quote the account key. spool_dir is data_dir/spool.
Result<std::optional<AzureBlobOptions>> azure_blob_options(const Config& c);

api::HttpServerOptions server_options(const Config& c);
api::ApiOptions api_options(const Config& c, const ModelRegistry& models);
api::PushHubOptions push_options(const Config& c);
webhooks::DispatcherOptions dispatcher_options(const Config& c);
ImageLimits image_limits(const Config& c);

// Creates the default tenant on first start and makes sure it has a key; returns a key to print
// when one was generated now ("" when the key came from configuration or already existed).
Result<std::string> ensure_default_tenant(Runtime& rt);

// [a-z0-9][a-z0-9-]{0,62}
bool valid_tenant_slug(const std::string& slug);

}  // namespace deeplens::app
