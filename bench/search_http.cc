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
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
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
#include "features/dnn/dnn_extractor.h"
#include "imaging/image.h"
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
  size_t recall_queries = 200;
  // Searches by image (part 2): a CNN model file (mobilenet_v2 from ../shared/models) and a photo.
  std::string model_file;
  std::string photo = "/usr/lib/python3/dist-packages/skimage/data/astronaut.png";
  int image_clients = 16;
};

[[noreturn]] void usage(int code) {
  std::cout << "search_http [--n 100000] [--queries 2000] [--top-k 10] [--concurrency 4] [--seconds 10]\n"
               "            [--recall-queries 200] [--model-file mobilenet_v2.pb [--photo P] [--image-clients 16]]\n";
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
    else if (f == "--recall-queries") a.recall_queries = std::stoul(next());
    else if (f == "--model-file") a.model_file = next();
    else if (f == "--photo") a.photo = next();
    else if (f == "--image-clients") a.image_clients = std::stoi(next());
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

double process_cpu_s() {
  timespec t{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

double thread_cpu_s() {
  timespec t{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
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
  std::unique_ptr<Extractor> cnn;  // --model-file: mobilenet_v2 for the searches by image
  if (!a.model_file.empty()) {
    ModelSpec spec;
    spec.name = "mobilenet_v2";
    spec.file = a.model_file;
    spec.output_layer = "embedding";
    spec.dimension = 1280;
    spec.mean = {127.5, 127.5, 127.5};
    spec.scale = 1 / 127.5;
    spec.batch_size = 16;
    auto made = make_dnn_extractor(spec);
    if (!made) throw std::runtime_error(made.error().to_string());
    cnn = std::move(made).value();
  }
  app::NodeOptions o;
  o.data_dir = dir;
  auto opened = app::Node::open(
      o,
      [&](const std::string& name) -> Extractor* {
        if (name == "noop") return &model;
        return name == "mobilenet_v2" ? cnn.get() : nullptr;
      },
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
  if (cnn) ao.models.push_back("mobilenet_v2");
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
  // CPU of the whole process and of this thread (the load generator runs on it): the server's
  // share is the difference, what a client on another machine would leave to the server.
  const double process0 = process_cpu_s(), client0 = thread_cpu_s();
  auto many = run_load(s);
  const double client_cpu = thread_cpu_s() - client0, process_cpu = process_cpu_s() - process0;
  const double requests = static_cast<double>(many.ok + many.failed) * (1 + 500.0 / (a.seconds * 1000.0));
  char label[64];
  std::snprintf(label, sizeof label, "POST /api/v1/search by imageId, c=%d", a.concurrency);
  print(label, many.latency_ms);
  std::printf("%-34s %.0f queries/s, %llu failed %s\n", "", many.per_second(),
              static_cast<unsigned long long>(many.failed), many.first_error.c_str());
  std::printf("%-34s CPU per query: server %.0f us, load generator %.0f us\n", "",
              1e6 * (process_cpu - client_cpu) / requests, 1e6 * client_cpu / requests);

  // 4. The transport alone: GET /healthz (answered on the I/O thread: no auth, no store, no JSON
  // of records), one at a time — what any request pays before its handler.
  LoadSpec h;
  h.port = server.port();
  h.method = "GET";
  h.target = "/healthz";
  h.body = [](uint64_t) { return std::string(); };
  h.concurrency = 1;
  h.warmup = std::chrono::milliseconds(500);
  h.duration = std::chrono::seconds(a.seconds);
  const double healthz_cpu0 = process_cpu_s();
  auto floor = run_load(h);
  print("GET /healthz, c=1 (transport)", floor.latency_ms);
  std::printf("%-34s CPU per request (server + load generator) %.0f us\n", "",
              1e6 * (process_cpu_s() - healthz_cpu0) / (static_cast<double>(floor.ok) * (1 + 500.0 / (a.seconds * 1000.0))));

  // 5. search_images() in-process on as many threads as the HTTP run had requests in flight.
  {
    std::atomic<uint64_t> done{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> workers;
    const auto t0 = SteadyClock::now();
    const double cpu0 = process_cpu_s();
    for (int t = 0; t < a.concurrency; ++t)
      workers.emplace_back([&, t] {
        for (size_t i = static_cast<size_t>(t) * 7919; !stop; ++i) {
          SearchQuery q;
          q.tenant_id = tenant;
          q.model = "noop";
          q.top_k = a.top_k;
          q.image_id = ids[i % ids.size()];
          if (auto r = search_images(node.context(), q); !r) throw std::runtime_error("search_images failed");
          ++done;
        }
      });
    std::this_thread::sleep_for(std::chrono::seconds(a.seconds));
    stop = true;
    for (auto& w : workers) w.join();
    const double qps = done / (ms_since(t0) / 1000);
    std::printf("search_images() in-process, %d threads: %.0f queries/s, CPU per query %.0f us; HTTP c=%d / in-process = %.2fx\n",
                a.concurrency, qps, 1e6 * (process_cpu_s() - cpu0) / done, a.concurrency, many.per_second() / qps);
  }

  // 5b. The API layer without the network: admit() + handle() of the same request, in-process.
  {
    std::atomic<uint64_t> done{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> workers;
    const auto t0 = SteadyClock::now();
    const double cpu0 = process_cpu_s();
    for (int t = 0; t < a.concurrency; ++t)
      workers.emplace_back([&, t] {
        for (size_t i = static_cast<size_t>(t) * 7919; !stop; ++i) {
          api::HttpRequest r;
          r.method = "POST";
          r.target = r.path = "/api/v1/search";
          r.headers = {{"x-api-key", key}, {"content-type", "application/json"}};
          r.body = body(ids[i % ids.size()]);
          if (auto admitted = service.admit(r); admitted.refusal) throw std::runtime_error("refused");
          if (service.handle(r).status != 200) throw std::runtime_error("handle failed");
          ++done;
        }
      });
    std::this_thread::sleep_for(std::chrono::seconds(a.seconds));
    stop = true;
    for (auto& w : workers) w.join();
    std::printf("ApiService admit+handle in-process, %d threads: %.0f queries/s, CPU per query %.0f us\n", a.concurrency,
                done / (ms_since(t0) / 1000), 1e6 * (process_cpu_s() - cpu0) / done);
  }

  // 6. Recall@k of the index with the defaults (HnswOptions, ef_for_size), against exact search.
  {
    size_t overlap = 0, total = 0;
    for (size_t i = 0; i < std::min(a.recall_queries, ids.size()); ++i) {
      auto v = index.get(ids[i]);
      auto approx = index.search(*v, a.top_k + 1, 0);
      SearchOptions exact;
      exact.exact = true;
      auto truth = index.search(*v, a.top_k + 1, 0, exact);
      if (!approx || !truth) throw std::runtime_error("index search failed");
      std::vector<std::string> want;
      for (const auto& hit : *truth)
        if (hit.id != ids[i] && want.size() < a.top_k) want.push_back(hit.id);
      size_t got = 0;
      for (const auto& hit : *approx)
        if (hit.id != ids[i] && got < a.top_k) {
          ++got;
          overlap += std::find(want.begin(), want.end(), hit.id) != want.end();
        }
      total += want.size();
    }
    std::printf("recall@%zu with the defaults (ef %zu at %zu vectors), %zu queries: %.4f\n", a.top_k,
                ef_for_size(HnswOptions{}.ef_search, index.count()), index.count(), std::min(a.recall_queries, ids.size()),
                total ? static_cast<double>(overlap) / total : 0.0);
  }

  // 7. Searches by image with a CNN (--model-file): the forward alone for 1 and for a batch of
  // image_clients, then through HTTP one at a time and image_clients at once, with /healthz
  // polled beside them.
  if (cnn) {
    const std::string photo = read_file(a.photo);
    const auto span = std::span(reinterpret_cast<const uint8_t*>(photo.data()), photo.size());
    auto pixels = decode_for_model(span, 224, 224, ImageLimits{});
    if (!pixels) throw std::runtime_error(pixels.error().to_string());
    auto forward = [&](size_t n) {
      std::vector<ExtractorInput> in(n, ExtractorInput{&*pixels, {}, "bench"});
      std::vector<double> t;
      for (int i = 0; i < 10; ++i) {
        const auto t0 = SteadyClock::now();
        if (auto r = cnn->extract(in); !r) throw std::runtime_error(r.error().to_string());
        t.push_back(ms_since(t0));
      }
      return percentiles(t);
    };
    forward(1);  // warm-up
    const auto one_forward = forward(1);
    const auto batch_forward = forward(static_cast<size_t>(a.image_clients));
    std::printf("mobilenet_v2 forward alone: 1 image p50 %.1f ms; %d images p50 %.1f ms\n", one_forward.p50,
                a.image_clients, batch_forward.p50);
    LoadSpec b;
    b.port = server.port();
    b.target = "/api/v1/search";
    b.headers = headers;
    b.content_type = std::string("multipart/form-data; boundary=") + kBoundary;
    // The file part, then a "model" part: drop the closing "--BOUNDARY--\r\n" and add it after.
    std::string form = multipart_file(photo, "query.png");
    form.resize(form.size() - (2 + std::strlen(kBoundary) + 4));
    form += std::string("--") + kBoundary + "\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nmobilenet_v2\r\n--" +
            kBoundary + "--\r\n";
    b.body = [&](uint64_t) { return form; };
    b.concurrency = 1;
    b.warmup = std::chrono::milliseconds(1000);
    b.duration = std::chrono::seconds(a.seconds);
    auto single = run_load(b);
    print("POST /api/v1/search by image, c=1", single.latency_ms);
    std::printf("%-34s %.1f queries/s, %llu failed %s\n", "", single.per_second(),
                static_cast<unsigned long long>(single.failed), single.first_error.c_str());
    b.concurrency = a.image_clients;
    LoadResult probe;
    std::thread prober([&] {
      LoadSpec p = h;
      p.warmup = std::chrono::milliseconds(1000);
      p.rate = 50;
      probe = run_load(p);
    });
    auto loaded = run_load(b);
    prober.join();
    char by_image[64];
    std::snprintf(by_image, sizeof by_image, "POST /api/v1/search by image, c=%d", a.image_clients);
    print(by_image, loaded.latency_ms);
    std::printf("%-34s %.1f queries/s, %llu failed %s\n", "", loaded.per_second(),
                static_cast<unsigned long long>(loaded.failed), loaded.first_error.c_str());
    print("GET /healthz during it (50/s)", probe.latency_ms);
    std::printf("by image c=%d p99 / (c=1 p50 x 2) = %.2f; p99 / forward of %d = %.2f\n", a.image_clients,
                loaded.latency_ms.p99 / (2 * single.latency_ms.p50), a.image_clients,
                loaded.latency_ms.p99 / batch_forward.p50);
  }
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
