// Shared by the benchmarks: an HTTP/1.1 load generator (keep-alive connections, a fixed number of
// requests in flight, latency of each), percentiles, 200 KB-style JPEG bodies that differ per
// request, and small /proc readers (RSS, CPU busy).
//
// Bench-only code; not part of the product.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace deeplens::bench {

struct LoadSpec {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string method = "POST";
  std::string target;  // e.g. "/api/v1/images/upload"
  std::vector<std::pair<std::string, std::string>> headers;
  int concurrency = 1;                         // connections, one request in flight on each
  std::chrono::milliseconds duration{10000};   // measured window
  std::chrono::milliseconds warmup{1000};      // before it: requests sent, not recorded
  double rate = 0;                             // requests/s over all connections; 0 = as fast as answered
  std::function<std::string(uint64_t seq)> body;  // the body of request number seq
  std::string content_type;
};

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, max = 0, mean = 0;
  size_t count = 0;
};
Percentiles percentiles(std::vector<double> values);

struct LoadResult {
  uint64_t ok = 0;        // 2xx answers inside the window
  uint64_t failed = 0;    // transport errors and non-2xx answers inside the window
  std::map<int, uint64_t> statuses;
  std::string first_error;
  double seconds = 0;     // the measured window
  Percentiles latency_ms; // of 2xx answers
  double per_second() const { return seconds > 0 ? ok / seconds : 0; }
};

// Runs the load on one client thread until warmup + duration have passed.
LoadResult run_load(const LoadSpec& spec);

// multipart/form-data with one part "file" holding `jpeg`; the boundary is kBoundary.
inline constexpr const char* kBoundary = "deeplens-bench-boundary-7d1f";
std::string multipart_file(const std::string& jpeg, const std::string& file_name);

// A JPEG of `size` bytes (within 4; or the source plus the tag when that is larger): the source with a comment segment
// right after SOI that carries `tag` and padding. Different tags give different bytes (so the
// duplicate check never fires) and the image decodes exactly like the source.
std::string tagged_jpeg(const std::string& source, const std::string& tag, size_t size);

std::string read_file(const std::string& path);

// VmRSS of a process in KiB (0 when unknown).
long rss_kib(pid_t pid);

// Jiffies of the whole machine: busy and total, from /proc/stat. busy share = dbusy / dtotal.
struct CpuTimes {
  uint64_t busy = 0, total = 0;
};
CpuTimes cpu_times();
double busy_share(const CpuTimes& a, const CpuTimes& b);

// A blocking GET/POST on a fresh connection (for polling /metrics, /readyz): status and body;
// status 0 when the connection failed.
std::pair<int, std::string> http_request(const std::string& host, uint16_t port, const std::string& method,
                                         const std::string& target, const std::string& body = "",
                                         const std::vector<std::pair<std::string, std::string>>& headers = {},
                                         const std::string& content_type = "");

// The value of a Prometheus sample line starting with `series` (e.g.
// `deeplens_images{status="completed"}`, or `deeplens_index_vectors{` for every label set) in a
// /metrics body; -1 when absent. Sums the lines that match.
double metric(const std::string& body, const std::string& series);

// A free TCP port on 127.0.0.1 (bound and released; racy but fine for a bench).
uint16_t free_port();

// Starts `argv` as a child with stdout/stderr appended to `log_path`; returns its pid.
pid_t spawn(const std::vector<std::string>& argv, const std::string& log_path);
// SIGTERM, then SIGKILL after `grace`; returns the exit status (waitpid's).
int stop_child(pid_t pid, std::chrono::milliseconds grace = std::chrono::milliseconds(20000));

}  // namespace deeplens::bench
