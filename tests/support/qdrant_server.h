// QdrantServer: what the Qdrant backend's tests talk to. By default the contract-checking stand-in
// (tests/support/qdrant_standin.py: exact search in memory, every request and response validated
// against Qdrant's OpenAPI document in ../shared/specs/qdrant/) on 127.0.0.1 and a free port; with
// DEEPLENS_TEST_QDRANT_URL=http://HOST:6333 set, that (real) Qdrant instead. Tests then use fresh
// tenant names so they do not meet data of earlier runs; fault injection and the contract record
// exist only on the stand-in (standin() tells which).
//
// Test-only, header-only; not thread-safe.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/http_client.h"

namespace deeplens::testing {

class QdrantServer {
 public:
  struct Options {
    bool require_tenant_filter = true;  // stand-in: a points query without the tenant filter is a violation
    std::string api_key;                // stand-in: demand this api-key header
  };

  QdrantServer() : QdrantServer(Options{}) {}
  explicit QdrantServer(Options options) : options_(std::move(options)) {
    if (const char* external = std::getenv("DEEPLENS_TEST_QDRANT_URL"); external && *external) {
      url_ = external;
      while (!url_.empty() && url_.back() == '/') url_.pop_back();
      return;
    }
    script_ = std::filesystem::path(DEEPLENS_SOURCE_DIR) / "tests/support/qdrant_standin.py";
    spec_ = spec_path();
    if (!std::filesystem::exists(spec_))
      throw std::runtime_error("Qdrant's OpenAPI document is not at " + spec_.string() +
                               " (set DEEPLENS_QDRANT_OPENAPI to its path)");
    port_ = free_port();
    url_ = "http://127.0.0.1:" + std::to_string(port_);
    start();
  }
  ~QdrantServer() { stop(); }
  QdrantServer(const QdrantServer&) = delete;
  QdrantServer& operator=(const QdrantServer&) = delete;

  static std::filesystem::path spec_path() {
    if (const char* env = std::getenv("DEEPLENS_QDRANT_OPENAPI"); env && *env) return env;
    return std::filesystem::path(DEEPLENS_SOURCE_DIR) / "../shared/specs/qdrant/openapi-1.19.json";
  }

  bool standin() const { return !script_.empty(); }
  const std::string& url() const { return url_; }
  std::string vectors_url() const { return "qdrant+" + url_; }

  void start() {
    if (!standin() || pid_ > 0) return;
    const std::string port = std::to_string(port_);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
      const int devnull = ::open("/dev/null", O_WRONLY);
      if (devnull >= 0) ::dup2(devnull, STDOUT_FILENO);
      std::vector<std::string> args = {"/usr/bin/python3", script_.string(), "--spec", spec_.string(), "--port", port};
      if (options_.require_tenant_filter) args.emplace_back("--require-tenant-filter");
      if (!options_.api_key.empty()) {
        args.emplace_back("--api-key");
        args.push_back(options_.api_key);
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!accepts()) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("the Qdrant stand-in exited during start-up (python3-jsonschema installed?)");
      }
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("the Qdrant stand-in did not start within 30 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  // Kills the stand-in (its data goes with it: a restarted one is empty).
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  // The stand-in's contract violations so far (requests or responses that do not validate against
  // Qdrant's OpenAPI document, requests without the tenant filter). Empty for a real Qdrant.
  std::vector<std::string> violations() {
    std::vector<std::string> out;
    if (!standin()) return out;
    const auto answer = nlohmann::json::parse(control("GET", "/__standin/violations", ""));
    for (const auto& v : answer["violations"]) out.push_back(v.get<std::string>());
    return out;
  }
  void clear_violations() {
    if (standin()) control("POST", "/__standin/violations/clear", "");
  }
  // Every Qdrant request waits delay_ms, then (status != 0) is answered with that status.
  void set_faults(int delay_ms, int status = 0) {
    control("POST", "/__standin/faults", nlohmann::json{{"delay_ms", delay_ms}, {"status", status}}.dump());
  }

 private:
  std::string control(const char* method, const char* path, const std::string& body) {
    if (!standin()) throw std::logic_error("fault injection and the contract record exist only on the stand-in");
    ClientRequest req;
    req.method = method;
    req.url = url_ + path;
    req.body = body;
    if (!body.empty()) req.headers.emplace_back("Content-Type", "application/json");
    auto res = http_.perform(req);
    if (!res || res->status != 200) throw std::runtime_error(std::string("stand-in control ") + path + " failed");
    return res->body;
  }

  static int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
  }

  bool accepts() const {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
  }

  Options options_;
  std::filesystem::path script_, spec_;
  std::string url_;
  int port_ = 0;
  pid_t pid_ = -1;
  HttpClient http_;
};

}  // namespace deeplens::testing
