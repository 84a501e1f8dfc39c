// AzuriteServer: the Azure Storage emulator's blob service (npm package `azurite`, installed by
// scripts/bootstrap into tools/azurite from its lockfile) for integration tests. Runs on 127.0.0.1
// and a free port with a fresh temporary workspace, waits until it accepts connections, and stops
// it (and removes the workspace) in the destructor. stop()/start() restart it on the same port and
// workspace (for outage tests). The account is Azurite's well-known devstoreaccount1.
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
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>

namespace deeplens::testing {

class AzuriteServer {
 public:
  static constexpr const char* kAccount = "devstoreaccount1";
  static constexpr const char* kKey =
      "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

  AzuriteServer() {
    binary_ = std::filesystem::path(DEEPLENS_SOURCE_DIR) / "tools/azurite/node_modules/.bin/azurite-blob";
    if (!std::filesystem::exists(binary_))
      throw std::runtime_error("Azurite not installed at " + binary_.string() + " (run scripts/bootstrap)");
    std::string templ = (std::filesystem::temp_directory_path() / "deeplens-azurite-XXXXXX").string();
    if (!::mkdtemp(templ.data())) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
    dir_ = templ;
    port_ = free_port();
    start();
  }
  ~AzuriteServer() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  AzuriteServer(const AzuriteServer&) = delete;
  AzuriteServer& operator=(const AzuriteServer&) = delete;

  int port() const { return port_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_) + "/" + kAccount; }
  std::string connection_string(const std::string& key = kKey) const {
    return std::string("DefaultEndpointsProtocol=http;AccountName=") + kAccount + ";AccountKey=" + key +
           ";BlobEndpoint=" + endpoint() + ";";
  }

  void start() {
    if (pid_ > 0) return;
    const std::string port = std::to_string(port_);
    const std::string location = dir_.string();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
      const int devnull = ::open("/dev/null", O_WRONLY);
      if (devnull >= 0) ::dup2(devnull, STDOUT_FILENO);  // its start-up banner is not test output
      ::execl(binary_.c_str(), binary_.c_str(), "--blobHost", "127.0.0.1", "--blobPort", port.c_str(), "--location",
              location.c_str(), "--silent", "--disableTelemetry", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!accepts()) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("Azurite exited during start-up");
      }
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("Azurite did not start within 30 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  void stop() {
    if (pid_ <= 0) return;
    // SIGTERM: Azurite saves its metadata database on the way out (a SIGKILL could lose the newest
    // blobs' entries); SIGKILL only when it does not exit within 10 s.
    ::kill(pid_, SIGTERM);
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
  }

 private:
  static int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
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

  std::filesystem::path binary_;
  std::filesystem::path dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace deeplens::testing
