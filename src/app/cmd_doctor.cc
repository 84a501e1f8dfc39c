// `deeplens doctor`: checks what a deployment needs, one verdict per line with what to do about a
// failure, without changing anything (no migration, no topic created, no file left behind):
//   config     the configuration loads (keys, types, URLs)
//   data_dir   exists or can be created, is writable (a probe file written, fsynced, removed)
//   disk       free space in data_dir (FAIL < 512 MiB, WARN < 2 GiB)
//   files      the open-file limit (FAIL < 1024, WARN below server.max_connections + 256)
//   metadata   SQLite: the database opens (or will be created) / PostgreSQL: reachable, migrated
//   bus        embedded log / Kafka: brokers answer, the pipeline's topics exist (or auto-create)
//   blobs      local folder / Azure Blob Storage answers with these credentials
//   vectors    embedded HNSW folder / Qdrant answers
//   model ...  each configured model loads, and one forward pass gives its dimension
// Exit status: 0 when nothing FAILed (warnings allowed), 1 otherwise, 2 when the configuration
// itself cannot be read.
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <zlib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstring>
#include <fstream>
#include <iostream>

#include "app/commands.h"
#include "app/global_flags.h"
#include "app/models.h"
#include "app/runtime.h"
#include "blob/azure/azure_blob_store.h"
#include "blob/local/local_blob_store.h"
#include "bus/kafka/kafka_bus.h"
#include "common/log.h"
#include "events/topics.h"
#include "imaging/image.h"
#include "store/postgres/postgres_metadata_store.h"
#include "vectors/qdrant/qdrant_vector_store.h"

namespace deeplens::app {
namespace {

namespace fs = std::filesystem;

class Report {
 public:
  void ok(const std::string& check, const std::string& detail) { line("OK  ", check, detail, ""); }
  void warn(const std::string& check, const std::string& detail, const std::string& fix) {
    line("WARN", check, detail, fix);
  }
  void fail(const std::string& check, const std::string& detail, const std::string& fix) {
    ++failures_;
    line("FAIL", check, detail, fix);
  }
  int failures() const { return failures_; }

 private:
  void line(const char* verdict, const std::string& check, const std::string& detail, const std::string& fix) {
    std::cout << verdict << "  " << check << std::string(check.size() < 10 ? 10 - check.size() : 1, ' ') << detail;
    if (!fix.empty()) std::cout << "\n      -> " << fix;
    std::cout << "\n";
  }
  int failures_ = 0;
};

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / (1024.0 * 1024 * 1024));
  return buf;
}

// Writes, fsyncs and removes a probe file: what the server does to every upload.
Status probe_writable(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Error(ErrorCode::kIoError, "cannot create " + dir.string() + ": " + ec.message());
  const fs::path probe = dir / (".doctor-" + std::to_string(::getpid()));
  FILE* f = std::fopen(probe.c_str(), "wb");
  if (!f) return Error(ErrorCode::kIoError, dir.string() + " is not writable: " + std::strerror(errno));
  const bool written = std::fputs("deeplens doctor\n", f) >= 0 && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  const int err = errno;
  std::fclose(f);
  fs::remove(probe, ec);
  if (!written) return Error(ErrorCode::kIoError, "cannot write to " + dir.string() + ": " + std::strerror(err));
  return {};
}

void check_data_dir(const Config& c, Report& r) {
  const fs::path dir = c.str("data_dir");
  const std::string fix = "create it and give it to the server's user (chown -R deeplens " + dir.string() +
                          "), or point data_dir elsewhere";
  if (auto st = probe_writable(dir); !st) return r.fail("data_dir", st.error().message, fix);
  r.ok("data_dir", fs::absolute(dir).string() + " (writable)");
  struct statvfs vfs {};
  if (::statvfs(dir.c_str(), &vfs) == 0) {
    const double free_bytes = static_cast<double>(vfs.f_bavail) * static_cast<double>(vfs.f_frsize);
    const std::string detail = gib(free_bytes) + " free in " + dir.string();
    if (free_bytes < 512.0 * 1024 * 1024)
      r.fail("disk", detail, "free space there: uploads are refused (507) once the disk is full");
    else if (free_bytes < 2.0 * 1024 * 1024 * 1024)
      r.warn("disk", detail, "less than 2 GiB left: plan more space for images, thumbnails and the index");
    else
      r.ok("disk", detail);
  }
}

void check_open_files(const Config& c, Report& r) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  const auto soft = static_cast<long long>(lim.rlim_cur);
  const long long wanted = c.integer("server.max_connections") + 256;
  const std::string detail = "open-file limit " + std::to_string(soft) + " (hard " +
                             (lim.rlim_max == RLIM_INFINITY ? std::string("unlimited") : std::to_string(lim.rlim_max)) + ")";
  const std::string fix = "raise it: LimitNOFILE=65536 in the systemd unit (the packaged units do), or ulimit -n";
  if (soft < 1024) return r.fail("files", detail, fix);
  if (soft < wanted)
    return r.warn("files", detail + ", below server.max_connections + 256 = " + std::to_string(wanted), fix);
  r.ok("files", detail);
}

void check_metadata(const Config& c, Report& r) {
  const std::string url = c.str("metadata.url");
  if (!url.empty()) {
    auto state = PostgresMetadataStore::schema_state(url);
    if (!state)
      return r.fail("metadata", state.error().message,
                    "start PostgreSQL, or fix metadata.url (" + redact_secrets(url) + ")");
    if (state->applied < state->latest)
      return r.fail("metadata",
                    "PostgreSQL schema at version " + std::to_string(state->applied) + ", this build needs " +
                        std::to_string(state->latest),
                    "run `deeplens migrate` (every server also migrates at start)");
    return r.ok("metadata", "PostgreSQL reachable, schema version " + std::to_string(state->applied));
  }
  const fs::path db = fs::path(c.str("data_dir")) / "deeplens.db";
  if (!fs::exists(db)) return r.ok("metadata", "SQLite " + db.string() + " (created on first start)");
  sqlite3* handle = nullptr;
  int rc = sqlite3_open_v2(db.c_str(), &handle, SQLITE_OPEN_READONLY, nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_exec(handle, "SELECT count(*) FROM sqlite_master", nullptr, nullptr, nullptr);
  const std::string message = handle ? sqlite3_errmsg(handle) : sqlite3_errstr(rc);
  sqlite3_close(handle);
  if (rc != SQLITE_OK)
    return r.fail("metadata", "SQLite " + db.string() + ": " + message,
                  "restore the file from a backup, or move it away to start empty");
  r.ok("metadata", "SQLite " + db.string() + " (opens)");
}

void check_bus(const Config& c, Report& r) {
  auto kafka = kafka_options(c);
  if (!kafka) return r.fail("bus", kafka.error().message, "fix bus.url");
  if (!*kafka) return r.ok("bus", "embedded event log in SQLite");
  (*kafka)->settings["log_level"] = "0";  // librdkafka's own connection errors: the verdict says it
  auto topics = kafka_cluster_topics(**kafka, std::chrono::milliseconds(5000));
  if (!topics)
    return r.fail("bus", topics.error().message + " (" + (*kafka)->bootstrap_servers + ")",
                  "start the brokers, or fix bus.url and the kafka.* security settings");
  std::vector<std::string> missing;
  for (const auto& t : topics::kAll)
    if (std::find(topics->begin(), topics->end(), std::string(t)) == topics->end()) missing.emplace_back(t);
  if (!missing.empty()) {
    std::string names;
    for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
    return r.warn("bus", "Kafka reachable; topics not there yet: " + names,
                  "the first `deeplens api`/`worker` creates them (bus.partitions, bus.replication), or create them yourself");
  }
  r.ok("bus", "Kafka reachable (" + (*kafka)->bootstrap_servers + "), all " + std::to_string(topics::kAll.size()) +
                  " topics present");
}

void check_blobs(const Config& c, Report& r, RandomSource& random) {
  auto azure = azure_blob_options(c);
  if (!azure) return r.fail("blobs", azure.error().message, "fix blobs.url / blobs.azure.connection_string");
  if (!*azure) {
    if (auto st = probe_writable(fs::path(c.str("data_dir")) / "blobs"); !st)
      return r.fail("blobs", st.error().message, "give data_dir/blobs to the server's user");
    return r.ok("blobs", "local files in " + (fs::path(c.str("data_dir")) / "blobs").string());
  }
  auto store = AzureBlobStore::open(**azure, random);
  if (!store) return r.fail("blobs", store.error().message, "fix the Azure connection string");
  if (auto st = (*store)->ping(); !st)
    return r.fail("blobs", "Azure Blob Storage at " + (*azure)->account.endpoint + ": " + st.error().message,
                  "check the account name and key, and that the endpoint is reachable");
  r.ok("blobs", "Azure Blob Storage at " + (*azure)->account.endpoint + " (account " + (*azure)->account.name + ")");
}

void check_vectors(const Config& c, Report& r) {
  const std::string url = c.str("vectors.url");
  if (url.empty()) {
    if (auto st = probe_writable(fs::path(c.str("data_dir")) / "vectors"); !st)
      return r.fail("vectors", st.error().message, "give data_dir/vectors to the server's user");
    return r.ok("vectors", "embedded HNSW index in " + (fs::path(c.str("data_dir")) / "vectors").string());
  }
  auto endpoint = qdrant::endpoint_of(url);
  if (!endpoint) return r.fail("vectors", endpoint.error().message, "fix vectors.url");
  QdrantOptions o;
  o.endpoint = *endpoint;
  o.api_key = c.str("vectors.qdrant.api_key");
  if (o.api_key.empty())
    if (const char* env = std::getenv("QDRANT_API_KEY")) o.api_key = env;
  o.timeout = std::chrono::milliseconds(std::max<int64_t>(1, c.integer("vectors.qdrant.timeout_ms")));
  o.max_attempts = 1;
  if (auto st = QdrantVectorStore::open(o)->ping(); !st)
    return r.fail("vectors", "Qdrant at " + *endpoint + ": " + st.error().message,
                  "start Qdrant, or fix vectors.url / vectors.qdrant.api_key");
  r.ok("vectors", "Qdrant at " + *endpoint + " answers");
}

// A small PNG (a colour gradient) for one forward pass, encoded here so no sample file is needed.
std::string sample_png(int w, int h) {
  std::string raw;
  for (int y = 0; y < h; ++y) {
    raw += '\0';  // filter: none
    for (int x = 0; x < w; ++x) {
      raw += static_cast<char>(x * 255 / w);
      raw += static_cast<char>(y * 255 / h);
      raw += static_cast<char>((x + y) * 127 / (w + h));
    }
  }
  uLongf size = compressBound(raw.size());
  std::string z(size, '\0');
  compress(reinterpret_cast<Bytef*>(z.data()), &size, reinterpret_cast<const Bytef*>(raw.data()), raw.size());
  z.resize(size);
  auto be32 = [](uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
  };
  auto chunk = [&](const std::string& type, const std::string& data) {
    const std::string body = type + data;
    const uint32_t crc = static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(body.data()), body.size()));
    return be32(static_cast<uint32_t>(data.size())) + body + be32(crc);
  };
  const std::string ihdr = be32(w) + be32(h) + std::string{8, 2, 0, 0, 0};  // 8-bit RGB
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + chunk("IDAT", z) + chunk("IEND", "");
}

void check_models(const Config& c, const GlobalFlags& flags, Report& r) {
  if (auto st = init_imaging(); !st) return r.fail("imaging", st.error().message, "reinstall libvips");
  ModelRegistryOptions mo;
  std::string file = flags.config_file;
  if (file.empty())
    if (const char* env = std::getenv("DEEPLENS_CONFIG")) file = env;
  if (!file.empty()) mo.base_dir = fs::path(file).parent_path();
  auto sections = c.sections("models");
  const std::string png = sample_png(96, 80);
  const auto bytes = std::span(reinterpret_cast<const uint8_t*>(png.data()), png.size());
  // One registry per model so that each gets its own verdict (the builtin comes with the first).
  const size_t n = std::max<size_t>(1, sections.size());
  for (size_t i = 0; i < n; ++i) {
    std::vector<ConfigSection> one;
    if (!sections.empty()) one.push_back(sections[i]);
    std::string label = sections.empty() ? "builtin" : std::to_string(i + 1);
    if (!sections.empty())
      if (auto name = sections[i].find("name"); name != sections[i].end()) label = name->second;
    auto registry = build_model_registry(one, mo);
    if (!registry) {
      r.fail("model " + label, registry.error().message,
             "fix [[models]] entry " + std::to_string(i + 1) + " (file, kind, dimension) or remove it");
      continue;
    }
    Extractor* model = (*registry)->find(sections.empty() ? "builtin" : label);
    if (!model) model = (*registry)->find("builtin");
    const ModelInfo& info = model->info();
    DecodedImage pixels;
    if (info.input_width > 0) {
      auto decoded = decode_for_model(bytes, info.input_width, info.input_height, ImageLimits{});
      if (!decoded) {
        r.fail("model " + label, "cannot prepare a sample image: " + decoded.error().message, "reinstall libvips");
        continue;
      }
      pixels = std::move(decoded).value();
    }
    const ExtractorInput input{pixels.rgb.empty() ? nullptr : &pixels, png, "doctor-sample"};
    const auto t0 = std::chrono::steady_clock::now();
    auto out = model->extract(std::span(&input, 1));
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    if (!out) {
      r.fail("model " + label, "a forward pass failed: " + out.error().message,
             "check the model file (or the remote service it points at)");
      continue;
    }
    if (out->size() != 1 || (*out)[0].size() != static_cast<size_t>(info.dimension)) {
      r.fail("model " + label,
             "the forward pass gave " + std::to_string(out->empty() ? 0 : (*out)[0].size()) + " values, not the " +
                 std::to_string(info.dimension) + " configured",
             "set the model's dimension to what it outputs");
      continue;
    }
    r.ok("model " + label, std::to_string(info.dimension) + "-d, version " + info.version + ", one forward in " +
                               std::to_string(ms) + " ms");
  }
}

}  // namespace

void register_doctor_command(CLI::App& root, GlobalFlags& flags, int* exit_code) {
  auto* cmd = root.add_subcommand(
      "doctor", "Check the configuration, every backend it points at, the models, disk space and file limits");
  cmd->callback([&flags, exit_code] {
    auto config = load_config(flags);
    if (!config) {
      std::cout << "FAIL  config    " << config.error().message << "\n      -> fix the key it names\n";
      *exit_code = 2;
      return;
    }
    LogOptions quiet;
    quiet.level = LogLevel::kError;  // the verdicts are the output; backends' own logs would only repeat them
    init_logging(quiet);
    Report report;
    report.ok("config", flags.config_file.empty() ? "defaults and environment (no --config file)"
                                                   : "loaded " + flags.config_file);
    SystemRandom random;
    check_data_dir(*config, report);
    check_open_files(*config, report);
    check_metadata(*config, report);
    check_bus(*config, report);
    check_blobs(*config, report, random);
    check_vectors(*config, report);
    check_models(*config, flags, report);
    std::cout << (report.failures() ? std::to_string(report.failures()) + " check(s) failed" : std::string("all checks passed"))
              << "\n";
    *exit_code = report.failures() ? 1 : 0;
  });
}

}  // namespace deeplens::app
