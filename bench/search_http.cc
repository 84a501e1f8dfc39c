// search_http: search by imageId through the HTTP API over a large collection (the budget: top-10
// over 100k 1280-d vectors, p99 <= 2 ms through the API), next to the same queries through
// search_images() in-process and the index alone, in one run (issue #8, part 4).
//
//   search_http                    100k images, 2,000 queries one at a time, then 4 in flight
//   search_http --n 20000 --queries 5000
//
// Setup, in-process and through the product's own interfaces: an embedded Node, a tenant with an
// API key, N image rows (MetadataStore::create_image) and their vectors (clustered synthetic
// 1280-d, VectorIndex::upsert_batch) in the tenant's collection for a no-op model, and the
// HttpServer + ApiService that `deeplens serve` runs.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <cmath>
#include <random>
#include <string>
#include <thread>

#include "api/api_service.h"
#include "api/http_server.h"
#include "app/node.h"
#include "common/log.h"
#include "common/sha256.h"
#include "events/topics.h"
#include "load.h"
#include "noop_extractor.h"
#include "pipeline/search.h"

namespace deeplens::bench {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

struct Args {
  size_t n = 100000;
  size_t queries = 2000;
  size_t top_k = 10;
  int seconds = 10;  // the run with several requests in flight
  int concurrency = 4;
};

[[noreturn]] void usage(int code) {
  std::cout << "search_http [--n 100000] [--queries 2000] [--top-k 10] [--concurrency 4] [--seconds 10]\n";
  std::exit(code);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(2);
      return argv[++i];
    };
    if (f == "--n") a.n = std::stoul(next());
    else if (f == "--queries") a.queries = std::stoul(next());
    else if (f == "--top-k") a.top_k = std::stoul(next());
    else if (f == "--concurrency") a.concurrency = std::stoi(next());
    else if (f == "--seconds") a.seconds = std::stoi(next());
    else if (f == "--help" || f == "-h") usage(0);
    else usage(2);
  }
  return a;
}

double ms_since(SteadyClock::time_point t) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t).count();
}

void print(const char* what, const Percentiles& p) {
  std::printf("%-34s p50 %7.3f  p90 %7.3f  p99 %7.3f  max %7.3f ms  (%zu)\n", what, p.p50, p.p90, p.p99, p.max,
              p.count);
  std::fflush(stdout);
}

std::string id_of(size_t i) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "img_00000000-0000-4000-8000-%012zu", i);
  return buf;
}

int run(const Args& a) {
  LogOptions lo;
  lo.level = LogLevel::kWarn;
  init_logging(lo);
  const fs::path dir = fs::temp_directory_path() / ("deeplens-bench-search-" + std::to_string(::getpid()));
  SystemClock clock;
  SystemRandom random;
  NoopExtractor model;
  app::NodeOptions o;
  o.data_dir = dir;
  auto opened = app::Node::open(o, [&](const std::string& name) -> Extractor* { return name == "noop" ? &model : nullptr; },
                                clock, random);
  if (!opened) throw std::runtime_error(opened.error().to_string());
  app::Node& node = **opened;
  const std::string tenant = "bench", key = "bench-search-key";
  if (auto st = node.store().create_tenant(Tenant{tenant, clock.now(), {}, 0, 0}); !st) throw std::runtime_error(st.error().to_string());
  if (auto st = node.store().add_api_key(api::api_key_record(node.ids(), tenant, key, "bench", clock.now()), sha256_hex(key)); !st)
    throw std::runtime_error(st.error().to_string());

  std::printf("machine: %u cores; %zu images, 1280-d clustered vectors, top-%zu; load average: ",
              std::thread::hardware_concurrency(), a.n, a.top_k);
  std::fflush(stdout);
  (void)std::system("cut -d' ' -f1-3 /proc/loadavg");

  // Vectors (CPU) and rows (fsync-bound) are filled at the same time.
  const auto fill0 = SteadyClock::now();
  auto collection = node.vectors().open_collection(collection_name(tenant, "noop"), 1280);
  if (!collection) throw std::runtime_error(collection.error().to_string());
  VectorIndex& index = **collection;
  std::thread vectors([&] {
    std::mt19937_64 rng(42);
    std::normal_distribution<float> gauss(0.0f, 1.0f);
    const size_t clusters = std::max<size_t>(1, a.n / 100);
    std::vector<std::vector<float>> centres(clusters, std::vector<float>(1280));
    for (auto& c : centres) {
      for (auto& x : c) x = gauss(rng);
      l2_normalize(c);
    }
    const float noise = 0.6f / std::sqrt(1280.0f);
    for (size_t i = 0; i < a.n; i += 1000) {
      std::vector<std::string> batch_ids;
      std::vector<std::vector<float>> batch_vectors;
      for (size_t k = i; k < std::min(a.n, i + 1000); ++k) {
        std::vector<float> v = centres[k % clusters];
        for (auto& x : v) x += noise * gauss(rng);
        l2_normalize(v);
        batch_ids.push_back(id_of(k));
        batch_vectors.push_back(std::move(v));
      }
      std::vector<VectorUpsert> batch;
      for (size_t k = 0; k < batch_ids.size(); ++k) batch.push_back(VectorUpsert{batch_ids[k], batch_vectors[k]});
      if (auto st = index.upsert_batch(batch); !st) throw std::runtime_error(st.error().to_string());
    }
  });
  for (size_t i = 0; i < a.n; ++i) {
    ImageRecord r;
    r.image_id = id_of(i);
    r.tenant_id = tenant;
    r.file_name = "bench.jpg";
    r.storage_path = "tenant-bench/images/bench/" + r.image_id + ".jpg";
    r.content_type = "image/jpeg";
    r.sha256 = std::to_string(i);
    r.format = "JPEG";
    r.models = {"noop"};
    r.status = ImageStatus::kCompleted;
    r.created_at = r.updated_at = clock.now();
    auto made = node.store().create_image(r, true, [&](const ImageRecord& img) {
      return OutboxMessage{std::string(topics::kImagesUploaded), img.image_id, "{}", {}};
    });
    if (!made) throw std::runtime_error(made.error().to_string());
    if ((i + 1) % 20000 == 0) std::printf("  %zu rows (%.0f s)\n", i + 1, ms_since(fill0) / 1000), std::fflush(stdout);
  }
  vectors.join();
  std::printf("filled in %.1f s: %zu rows, %zu vectors\n", ms_since(fill0) / 1000, a.n, index.count());

  api::ApiOptions ao;
  ao.default_model = "noop";
  ao.models = {"noop"};
  api::ApiService service(node.context(), node.bus(), ao);
  api::HttpServerOptions so;
  so.listen = "127.0.0.1:0";
  so.spool_dir = dir;
  api::HttpServer server(so, [&](api::HttpRequest& r) { return service.handle(r); },
                         [&](api::HttpRequest& r) { return service.admit(r); });
  if (auto st = server.start(); !st) throw std::runtime_error(st.error().to_string());

  std::mt19937_64 pick(7);
  std::vector<std::string> ids(a.queries);
  for (auto& id : ids) id = id_of(pick() % a.n);
  auto body = [&](const std::string& id) {
    return std::string(R"({"imageId":")") + id + R"(","topK":)" + std::to_string(a.top_k) + "}";
  };
  const std::vector<std::pair<std::string, std::string>> headers = {{"X-API-Key", key}};

  // 1. The index alone: the stored vector's search, as search_images asks it (top_k + 1 + 8).
  std::vector<double> lat;
  for (const auto& id : ids) {
    auto v = index.get(id);
    const auto t0 = SteadyClock::now();
    auto hits = index.search(*v, a.top_k + 9, 0);
    lat.push_back(ms_since(t0));
    if (!hits) throw std::runtime_error(hits.error().to_string());
  }
  print("index.search (HNSW)", percentiles(lat));
  // 2. search_images(): vector lookup, index search, one record per hit.
  lat.clear();
  for (const auto& id : ids) {
    SearchQuery q;
    q.tenant_id = tenant;
    q.model = "noop";
    q.top_k = a.top_k;
    q.image_id = id;
    const auto t0 = SteadyClock::now();
    auto r = search_images(node.context(), q);
    lat.push_back(ms_since(t0));
    if (!r || r->results.size() != a.top_k) throw std::runtime_error("search_images failed");
  }
  print("search_images() in-process", percentiles(lat));
  // 3. Through HTTP, one at a time (a fresh connection each is not what clients do: keep-alive).
  LoadSpec s;
  s.port = server.port();
  s.target = "/api/v1/search";
  s.headers = headers;
  s.content_type = "application/json";
  s.body = [&](uint64_t seq) { return body(ids[seq % ids.size()]); };
  s.concurrency = 1;
  s.warmup = std::chrono::milliseconds(500);
  s.duration = std::chrono::seconds(a.seconds);
  auto one = run_load(s);
  print("POST /api/v1/search by imageId, c=1", one.latency_ms);
  std::printf("%-34s %.0f queries/s, %llu failed %s\n", "", one.per_second(), static_cast<unsigned long long>(one.failed),
              one.first_error.c_str());
  s.concurrency = a.concurrency;
  auto many = run_load(s);
  char label[64];
  std::snprintf(label, sizeof label, "POST /api/v1/search by imageId, c=%d", a.concurrency);
  print(label, many.latency_ms);
  std::printf("%-34s %.0f queries/s, %llu failed %s\n", "", many.per_second(),
              static_cast<unsigned long long>(many.failed), many.first_error.c_str());
  std::printf("RSS %.0f MiB\n", rss_kib(::getpid()) / 1024.0);

  server.stop();
  node.stop();
  opened->reset();
  fs::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace deeplens::bench

int main(int argc, char** argv) {
  try {
    return deeplens::bench::run(deeplens::bench::parse(argc, argv));
  } catch (const std::exception& e) {
    std::cerr << "search_http: " << e.what() << "\n";
    return 1;
  }
}
