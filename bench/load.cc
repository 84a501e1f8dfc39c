#include "load.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace deeplens::bench {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

Percentiles percentiles(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))]; };
  p.p50 = at(0.50);
  p.p90 = at(0.90);
  p.p99 = at(0.99);
  p.max = v.back();
  p.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  p.count = v.size();
  return p;
}

namespace {

struct LoadState {
  const LoadSpec& spec;
  SteadyClock::time_point window_start, window_end;
  uint64_t next_seq = 0;
  LoadResult result;
  std::vector<double> latencies;
};

asio::awaitable<void> connection(LoadState& st) {
  auto ex = co_await asio::this_coro::executor;
  const tcp::endpoint ep(asio::ip::make_address(st.spec.host), st.spec.port);
  std::unique_ptr<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
  // With a rate, each connection sends one request per `interval`, staggered.
  const auto interval = st.spec.rate > 0 ? std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(
                                               st.spec.concurrency / st.spec.rate))
                                         : SteadyClock::duration::zero();
  auto next_send = SteadyClock::now() + interval * (st.next_seq % std::max(1, st.spec.concurrency)) /
                                            std::max(1, st.spec.concurrency);
  while (SteadyClock::now() < st.window_end) {
    if (interval > SteadyClock::duration::zero()) {
      if (next_send > SteadyClock::now()) {
        asio::steady_timer pace(ex, next_send);
        co_await pace.async_wait(asio::use_awaitable);
      }
      next_send += interval;
    }
    http::request<http::string_body> req{http::string_to_verb(st.spec.method), st.spec.target, 11};
    req.set(http::field::host, st.spec.host);
    for (const auto& [k, v] : st.spec.headers) req.set(k, v);
    if (!st.spec.content_type.empty()) req.set(http::field::content_type, st.spec.content_type);
    req.body() = st.spec.body(st.next_seq++);
    req.prepare_payload();
    req.keep_alive(true);

    const auto t0 = SteadyClock::now();
    int status = 0;
    std::string error;
    bool keep = false;
    try {
      if (!stream) {
        stream = std::make_unique<beast::tcp_stream>(ex);
        co_await stream->async_connect(ep, asio::use_awaitable);
        stream->socket().set_option(tcp::no_delay(true));
        buffer.clear();
      }
      co_await http::async_write(*stream, req, asio::use_awaitable);
      http::response<http::string_body> res;
      co_await http::async_read(*stream, buffer, res, asio::use_awaitable);
      status = res.result_int();
      keep = res.keep_alive();
      if (status >= 300) error = "HTTP " + std::to_string(status) + ": " + res.body().substr(0, 300);
    } catch (const std::exception& e) {
      error = e.what();
    }
    const auto t1 = SteadyClock::now();
    if (!keep) stream.reset();
    if (t0 >= st.window_start && t1 <= st.window_end) {
      ++st.result.statuses[status];
      if (error.empty()) {
        ++st.result.ok;
        st.latencies.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      } else {
        ++st.result.failed;
        if (st.result.first_error.empty()) st.result.first_error = error;
      }
    }
    if (!error.empty() && status == 0) {  // connection trouble: back off a little
      asio::steady_timer t(ex, std::chrono::milliseconds(50));
      co_await t.async_wait(asio::use_awaitable);
    }
  }
}

}  // namespace

LoadResult run_load(const LoadSpec& spec) {
  asio::io_context ioc(1);
  LoadState st{spec, {}, {}, 0, {}, {}};
  st.window_start = SteadyClock::now() + spec.warmup;
  st.window_end = st.window_start + spec.duration;
  for (int i = 0; i < spec.concurrency; ++i) asio::co_spawn(ioc, connection(st), asio::detached);
  ioc.run();
  st.result.seconds = std::chrono::duration<double>(spec.duration).count();
  st.result.latency_ms = percentiles(std::move(st.latencies));
  return st.result;
}

std::string multipart_file(const std::string& jpeg, const std::string& file_name) {
  std::string b;
  b.reserve(jpeg.size() + 256);
  b += "--";
  b += kBoundary;
  b += "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + file_name +
       "\"\r\nContent-Type: image/jpeg\r\n\r\n";
  b += jpeg;
  b += "\r\n--";
  b += kBoundary;
  b += "--\r\n";
  return b;
}

std::string tagged_jpeg(const std::string& source, const std::string& tag, size_t size) {
  if (source.size() < 4 || static_cast<uint8_t>(source[0]) != 0xFF || static_cast<uint8_t>(source[1]) != 0xD8)
    throw std::runtime_error("not a JPEG");
  std::string out = "\xFF\xD8";
  auto add_comment = [&](const std::string& payload) {  // a COM segment holds <= 65533 bytes
    const size_t len = payload.size() + 2;
    out += "\xFF\xFE";
    out += static_cast<char>(len >> 8);
    out += static_cast<char>(len & 0xFF);
    out += payload;
  };
  add_comment(tag);
  size_t total = out.size() + source.size() - 2;
  while (total + 4 < size) {
    const size_t payload = std::min<size_t>(65533, size - total - 4);
    add_comment(std::string(payload, ' '));
    total += payload + 4;
  }
  out.append(source, 2, std::string::npos);
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  return 0;
}

CpuTimes cpu_times() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  uint64_t v[8] = {};
  in >> cpu >> v[0] >> v[1] >> v[2] >> v[3] >> v[4] >> v[5] >> v[6] >> v[7];
  CpuTimes t;
  for (auto x : v) t.total += x;
  t.busy = t.total - v[3] - v[4];  // minus idle and iowait
  return t;
}

double busy_share(const CpuTimes& a, const CpuTimes& b) {
  return b.total > a.total ? static_cast<double>(b.busy - a.busy) / static_cast<double>(b.total - a.total) : 0;
}

std::pair<int, std::string> http_request(const std::string& host, uint16_t port, const std::string& method,
                                         const std::string& target, const std::string& body,
                                         const std::vector<std::pair<std::string, std::string>>& headers,
                                         const std::string& content_type) {
  try {
    asio::io_context ioc;
    beast::tcp_stream stream(ioc);
    stream.expires_after(std::chrono::seconds(30));
    stream.connect(tcp::endpoint(asio::ip::make_address(host), port));
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, host);
    for (const auto& [k, v] : headers) req.set(k, v);
    if (!content_type.empty()) req.set(http::field::content_type, content_type);
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    return {res.result_int(), res.body()};
  } catch (const std::exception&) {
    return {0, ""};
  }
}

double metric(const std::string& body, const std::string& series) {
  double sum = 0;
  bool found = false;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() <= series.size() || line.compare(0, series.size(), series) != 0) continue;
    if (series.back() == '{' || line[series.size()] == ' ') {
      sum += std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
      found = true;
    }
  }
  return found ? sum : -1;
}

uint16_t free_port() {
  asio::io_context ioc;
  tcp::acceptor a(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

pid_t spawn(const std::vector<std::string>& argv, const std::string& log_path) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::perror("execv");
    ::_exit(127);
  }
  return pid;
}

int stop_child(pid_t pid, std::chrono::milliseconds grace) {
  ::kill(pid, SIGTERM);
  const auto end = SteadyClock::now() + grace;
  int status = 0;
  while (SteadyClock::now() < end) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return status;
}

}  // namespace deeplens::bench
