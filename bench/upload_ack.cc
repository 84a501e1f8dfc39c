// upload_ack: how fast `deeplens serve` acknowledges uploads while its stages keep the CPU busy,
// against the floor — the same requests to a trivial endpoint that only makes the body durable —
// measured in one run (issue #8, parts 1 and 5).
//
//   upload_ack                          c = 1, 16, 100; 15 s each; mobilenet_v2 extraction
//   upload_ack --concurrency 100 --seconds 30
//   upload_ack --soak 600               10 minutes of continuous uploads; RSS sampled every 10 s
//   upload_ack --blobs both --no-floor  local blobs vs Azure Blob Storage (a real Azurite), one run
//   upload_ack --help
//
// The server is the real binary (`deeplens serve`, embedded backends, a fresh data dir), started as
// a child. The floor is our own HttpServer (same HTTP stack, same spooling of the body to disk) in
// this process with a handler that fsyncs the spooled body, renames it into place and fsyncs the
// directory: the two fsyncs an accepted upload cannot do without. Bodies are 200 KB JPEGs that
// differ per request (a comment segment), so every upload is new work for the pipeline.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "api/http_server.h"
#include "load.h"
#include "support/azurite_server.h"

namespace deeplens::bench {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct Args {
  std::string deeplens = DEEPLENS_BINARY;
  std::string photo = "/usr/share/doc/opencv-doc/examples/data/baboon.jpg";
  std::string models_dir = std::string(DEEPLENS_SOURCE_DIR) + "/../shared/models";
  std::string model = "mobilenet_v2";  // or "builtin"
  size_t size = 200 * 1024;
  std::vector<int> concurrency = {1, 16, 100};
  int seconds = 15;
  int fill_seconds = 5;     // uploads before the measured runs, so that the stages are busy
  int soak = 0;             // seconds of the RSS soak (0: none)
  int soak_concurrency = 4;
  double soak_rate = 20;    // uploads/s during the soak (about what the pipeline keeps up with)
  bool floor = true;
  bool keep = false;        // keep the data dir
  std::string blobs = "local";  // local, azure (Azurite started here) or both (two servers, one run)
};

[[noreturn]] void usage(int code) {
  std::cout << "upload_ack [--concurrency 1,16,100|none] [--seconds 15] [--model mobilenet_v2|builtin]\n"
               "           [--photo FILE.jpg] [--size BYTES] [--no-floor] [--fill-seconds 5] [--soak SECONDS]\n"
               "           [--soak-concurrency 4] [--soak-rate 20] [--deeplens PATH] [--models-dir DIR] [--keep]\n"
               "           [--blobs local|azure|both]\n";
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
    if (f == "--concurrency") {
      a.concurrency.clear();
      std::string list = next();
      for (size_t p = 0; p < list.size() && list != "none";) {
        a.concurrency.push_back(std::stoi(list.substr(p)));
        p = list.find(',', p);
        if (p == std::string::npos) break;
        ++p;
      }
    } else if (f == "--seconds") a.seconds = std::stoi(next());
    else if (f == "--fill-seconds") a.fill_seconds = std::stoi(next());
    else if (f == "--model") a.model = next();
    else if (f == "--photo") a.photo = next();
    else if (f == "--size") a.size = std::stoul(next());
    else if (f == "--no-floor") a.floor = false;
    else if (f == "--soak") a.soak = std::stoi(next());
    else if (f == "--soak-concurrency") a.soak_concurrency = std::stoi(next());
    else if (f == "--soak-rate") a.soak_rate = std::stod(next());
    else if (f == "--deeplens") a.deeplens = next();
    else if (f == "--models-dir") a.models_dir = next();
    else if (f == "--keep") a.keep = true;
    else if (f == "--blobs") a.blobs = next();
    else if (f == "--help" || f == "-h") usage(0);
    else {
      std::cerr << "unknown flag " << f << "\n";
      usage(2);
    }
  }
  return a;
}

// The floor: make the spooled body durable under a new name (fsync file, rename, fsync
// directory) and answer 202. Old files are unlinked so the disk does not fill.
class FloorEndpoint {
 public:
  explicit FloorEndpoint(fs::path dir) : dir_(std::move(dir)) {
    fs::create_directories(dir_ / "spool");
    fs::create_directories(dir_ / "kept");
    dir_fd_ = ::open((dir_ / "kept").c_str(), O_RDONLY | O_DIRECTORY);
  }
  ~FloorEndpoint() { ::close(dir_fd_); }

  api::HttpResponse handle(api::HttpRequest& req) {
    if (req.body_file.empty()) return api::error_response(400, "NO_BODY", "no body");
    const int fd = ::open(req.body_file.c_str(), O_RDONLY);
    const bool synced = fd >= 0 && ::fsync(fd) == 0;
    if (fd >= 0) ::close(fd);
    if (!synced) return api::error_response(500, "IO", "fsync failed");
    fs::path kept;
    {
      std::lock_guard lock(mu_);
      kept = dir_ / "kept" / ("body-" + std::to_string(seq_++));
      recent_.push_back(kept);
      if (recent_.size() > 256) {
        std::error_code ec;
        fs::remove(recent_.front(), ec);
        recent_.pop_front();
      }
    }
    fs::rename(req.body_file, kept);
    if (::fsync(dir_fd_) != 0) return api::error_response(500, "IO", "fsync failed");
    return api::json_response(202, R"({"status":"uploaded"})");
  }
  fs::path spool_dir() const { return dir_ / "spool"; }

 private:
  fs::path dir_;
  int dir_fd_ = -1;
  std::mutex mu_;
  uint64_t seq_ = 0;
  std::deque<fs::path> recent_;
};

struct Target {
  std::string name;
  uint16_t port;
  std::string path;
};

void print_row(const std::string& name, int c, const LoadResult& r, double busy) {
  const auto& l = r.latency_ms;
  std::printf("%-8s c=%-4d %8.1f req/s   p50 %7.2f  p90 %7.2f  p99 %7.2f  max %8.2f ms   ok %6llu  failed %llu  cpu %3.0f%%\n",
              name.c_str(), c, r.per_second(), l.p50, l.p90, l.p99, l.max, static_cast<unsigned long long>(r.ok),
              static_cast<unsigned long long>(r.failed), busy * 100);
  if (!r.first_error.empty()) std::printf("         first error: %s\n", r.first_error.c_str());
  std::fflush(stdout);
}

// One `deeplens serve` child under test, with its own data dir and port.
struct Served {
  std::string name;
  pid_t pid = -1;
  uint16_t port = 0;
  fs::path dir;
};

Served start_serve(const Args& a, const std::string& name, const fs::path& dir, const std::string& key,
                   const std::string& blobs_config) {
  Served s{name, -1, free_port(), dir};
  fs::create_directories(dir / "data");
  {
    std::ofstream cfg(dir / "deeplens.toml");
    cfg << "data_dir = \"" << (dir / "data").string() << "\"\n"
        << "[server]\nlisten = \"127.0.0.1:" << s.port << "\"\n"
        << "[auth]\ndefault_key = \"" << key << "\"\n"
        << "[log]\nlevel = \"warn\"\n"
        << blobs_config;
    if (a.model == "mobilenet_v2")
      cfg << "[[models]]\nname = \"mobilenet_v2\"\nfile = \"" << a.models_dir
          << "/mobilenet_v2_1.0_224_quint8.pb\"\noutput_layer = \"embedding\"\ndimension = 1280\n"
             "mean = 127.5\nscale = \"0.00784313725490196\"\n";
  }
  s.pid = spawn({a.deeplens, "--config", (dir / "deeplens.toml").string(), "serve"}, (dir / "serve.log").string());
  bool ready = false;
  for (int i = 0; i < 600 && !ready; ++i) {
    ready = http_request("127.0.0.1", s.port, "GET", "/readyz").first == 200;
    if (!ready) std::this_thread::sleep_for(100ms);
  }
  if (!ready) {
    std::cerr << "deeplens serve (" << name << ") did not become ready; see " << (dir / "serve.log") << "\n";
    stop_child(s.pid);
    s.pid = -1;
  }
  return s;
}

int run(const Args& a) {
  const std::string source = read_file(a.photo);
  const fs::path dir = fs::temp_directory_path() / ("deeplens-bench-upload-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string key = "bench-key-" + std::to_string(::getpid());
  if (a.blobs != "local" && a.blobs != "azure" && a.blobs != "both") usage(2);

  // The servers under test: `deeplens serve`, embedded backends, each its own data dir; with Azure
  // blobs against a real Azurite started here.
  std::unique_ptr<testing::AzuriteServer> azurite;
  std::vector<Served> servers;
  if (a.blobs != "azure") servers.push_back(start_serve(a, a.blobs == "both" ? "local" : "deeplens", dir / "local", key, ""));
  if (a.blobs != "local") {
    azurite = std::make_unique<testing::AzuriteServer>();
    servers.push_back(start_serve(a, a.blobs == "both" ? "azure" : "deeplens", dir / "azure", key,
                                  "[blobs]\nurl = \"azure\"\n[blobs.azure]\nconnection_string = \"" +
                                      azurite->connection_string() + "\"\n"));
  }
  for (const auto& s : servers)
    if (s.pid < 0) {
      for (const auto& o : servers)
        if (o.pid > 0) stop_child(o.pid);
      return 1;
    }
  const pid_t serve = servers.front().pid;  // the soak watches the first
  const uint16_t port = servers.front().port;

  FloorEndpoint floor_endpoint(dir / "floor");
  api::HttpServerOptions fo;
  fo.listen = "127.0.0.1:0";
  fo.spool_dir = floor_endpoint.spool_dir();
  api::HttpServer floor_server(fo, [&](api::HttpRequest& r) { return floor_endpoint.handle(r); },
                               [](api::HttpRequest&) { return api::Admission{std::nullopt, true}; });
  if (auto st = floor_server.start(); !st) {
    std::cerr << "floor server: " << st.error().to_string() << "\n";
    for (const auto& sv : servers) stop_child(sv.pid);
    return 1;
  }

  auto spec_for = [&](const Target& t, int c, std::chrono::milliseconds duration) {
    LoadSpec s;
    s.port = t.port;
    s.target = t.path;
    s.headers = {{"X-API-Key", key}};
    s.concurrency = c;
    s.duration = duration;
    s.content_type = std::string("multipart/form-data; boundary=") + kBoundary;
    const std::string tag_prefix = t.name + "-" + std::to_string(c) + "-" + std::to_string(::getpid()) + "-";
    s.body = [&source, &a, tag_prefix](uint64_t seq) {
      return multipart_file(tagged_jpeg(source, tag_prefix + std::to_string(seq), a.size), "bench.jpg");
    };
    return s;
  };
  std::vector<Target> targets;
  for (const auto& sv : servers) targets.push_back(Target{sv.name, sv.port, "/api/v1/images/upload"});
  const Target deeplens = targets.front();
  const Target floor{"floor", floor_server.port(), "/floor"};
  if (a.floor) targets.push_back(floor);

  std::printf("machine: %u cores; body %zu bytes (%s + comment); model %s; %d s per run after 1 s warm-up\n",
              std::thread::hardware_concurrency(), tagged_jpeg(source, "x", a.size).size(), a.photo.c_str(),
              a.model.c_str(), a.seconds);
  // Fill the pipeline first so that the stages are busy during every measured run.
  std::printf("filling the pipeline (%d s of uploads at c=16) ...\n", a.fill_seconds);
  uint64_t failed = 0;
  for (const auto& sv : servers) {
    auto fill = run_load(spec_for(Target{sv.name, sv.port, "/api/v1/images/upload"}, 16, std::chrono::seconds(a.fill_seconds)));
    std::printf("  %s: accepted %llu uploads (%.0f/s)\n", sv.name.c_str(), static_cast<unsigned long long>(fill.ok),
                fill.per_second());
    failed += fill.failed;
  }

  for (int c : a.concurrency) {
    std::vector<std::pair<Target, LoadResult>> rows;
    for (const Target& t : targets) {
      const auto cpu0 = cpu_times();
      auto r = run_load(spec_for(t, c, std::chrono::milliseconds(a.seconds * 1000)));
      print_row(t.name, c, r, busy_share(cpu0, cpu_times()));
      failed += r.failed;
      rows.emplace_back(t, r);
    }
    for (size_t i = 1; i < rows.size(); ++i) {  // each against the first
      const auto& d = rows[i].second;
      const auto& f = rows[0].second;
      std::printf("ratio    c=%-4d %s/%s: throughput %.2f, p50 %.2f, p99 %.2f\n", c, rows[i].first.name.c_str(),
                  rows[0].first.name.c_str(), d.per_second() / std::max(1e-9, f.per_second()),
                  d.latency_ms.p50 / std::max(1e-9, f.latency_ms.p50), d.latency_ms.p99 / std::max(1e-9, f.latency_ms.p99));
    }
    for (const auto& sv : servers) {
      const auto m = http_request("127.0.0.1", sv.port, "GET", "/metrics").second;
      std::printf("         %s pipeline: %.0f completed, %.0f waiting for extraction\n", sv.name.c_str(),
                  metric(m, "deeplens_images{status=\"completed\"}"),
                  metric(m, "deeplens_queue_depth{group=\"deeplens.extractor\"}"));
    }
  }

  if (a.soak > 0) {
    std::printf("soak: %d s of uploads at c=%d, %.0f/s; RSS of deeplens serve every 10 s\n", a.soak, a.soak_concurrency,
                a.soak_rate);
    std::printf("%6s %10s %10s %10s %10s\n", "t s", "RSS MiB", "uploads", "completed", "vectors");
    LoadResult soak_result;
    std::thread load([&] {
      auto spec = spec_for(deeplens, a.soak_concurrency, std::chrono::seconds(a.soak));
      spec.rate = a.soak_rate;
      soak_result = run_load(spec);
    });
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t <= a.soak + 1; t += 10) {
      std::this_thread::sleep_until(t0 + std::chrono::seconds(t));
      const auto m = http_request("127.0.0.1", port, "GET", "/metrics").second;
      std::printf("%6d %10.1f %10.0f %10.0f %10.0f\n", t, rss_kib(serve) / 1024.0,
                  metric(m, "deeplens_uploads_total{outcome=\"accepted\"}"),
                  metric(m, "deeplens_images{status=\"completed\"}"),
                  metric(m, "deeplens_index_vectors{"));
      std::fflush(stdout);
    }
    load.join();
    print_row("soak", a.soak_concurrency, soak_result, 0);
    failed += soak_result.failed;
  }

  floor_server.stop();
  for (const auto& sv : servers) std::printf("deeplens serve (%s) stopped (wait status %d)\n", sv.name.c_str(), stop_child(sv.pid));
  if (!a.keep) fs::remove_all(dir);
  else std::printf("kept %s\n", dir.c_str());
  if (failed) std::printf("%llu requests failed\n", static_cast<unsigned long long>(failed));
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace deeplens::bench

int main(int argc, char** argv) { return deeplens::bench::run(deeplens::bench::parse(argc, argv)); }
