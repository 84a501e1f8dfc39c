// PostgresServer: a real PostgreSQL 15 server (Debian's binaries) for integration tests. It
// creates a cluster with initdb in a fresh temporary directory, runs `postgres` on 127.0.0.1 and a
// free port (unix socket directory inside the temp directory), waits until it accepts connections
// and removes everything in the destructor. stop()/start() restart it on the same port and data
// directory (for outage tests).
//
// initdb and postgres refuse to run as root: when the test runs as root, the server runs as the
// `postgres` system user (installed with the postgresql package) and the temp directory is handed
// to it. The server is our direct child and gets SIGQUIT if the test process dies, so a crashed
// test leaves no server behind. Settings favour speed (fsync=off): a clean stop() still checkpoints,
// so a restart loses nothing; only an OS crash could.
//
// Binaries: /usr/lib/postgresql/15/bin, or $DEEPLENS_PG_BINDIR. Start-up failures throw
// std::runtime_error with the server log's tail.
//
// Test-only, header-only; not thread-safe (use from the test's main thread).
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace deeplens::testing {

class PostgresServer {
 public:
  PostgresServer() {
    const char* env_bindir = std::getenv("DEEPLENS_PG_BINDIR");
    bindir_ = env_bindir ? env_bindir : "/usr/lib/postgresql/15/bin";
    if (!std::filesystem::exists(bindir_ / "postgres"))
      throw std::runtime_error("PostgreSQL 15 server binaries not found in " + bindir_.string() +
                               " (install the postgresql-15 package or set DEEPLENS_PG_BINDIR)");
    std::string templ = (std::filesystem::temp_directory_path() / "deeplens-pg-XXXXXX").string();
    if (!::mkdtemp(templ.data())) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
    dir_ = templ;
    std::filesystem::create_directories(dir_ / "sock");
    if (::geteuid() == 0) {
      const passwd* pw = ::getpwnam("postgres");
      if (!pw) throw std::runtime_error("running as root but there is no 'postgres' user to run the server as");
      uid_ = pw->pw_uid;
      gid_ = pw->pw_gid;
      for (const auto& p : {dir_, dir_ / "sock"})
        if (::chown(p.c_str(), uid_, gid_) != 0)
          throw std::runtime_error("chown " + p.string() + ": " + std::strerror(errno));
      drop_privileges_ = true;
    }
    port_ = free_port();
    const int rc = run_and_wait({(bindir_ / "initdb").string(), "-D", (dir_ / "data").string(), "-U", "postgres",
                                 "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"},
                                dir_ / "initdb.log");
    if (rc != 0) {
      const std::string log = tail(dir_ / "initdb.log");
      std::filesystem::remove_all(dir_);
      throw std::runtime_error("initdb failed (exit " + std::to_string(rc) + "): " + log);
    }
    start();
  }

  ~PostgresServer() {
    try {
      stop();
    } catch (...) {
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // Starts the server (same port and data as before) and waits until it accepts connections.
  void start() {
    if (pid_ > 0) return;
    pid_ = spawn({(bindir_ / "postgres").string(), "-D", (dir_ / "data").string(), "-p", std::to_string(port_), "-k",
                  (dir_ / "sock").string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c",
                  "full_page_writes=off", "-c", "max_connections=200", "-c", "deadlock_timeout=100ms"},
                 dir_ / "postgres.log", SIGQUIT);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    std::string last_error;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("postgres exited during start-up: " + tail(dir_ / "postgres.log"));
      }
      try {
        pqxx::connection probe(url("postgres") + "?connect_timeout=2");
        return;
      } catch (const std::exception& e) {
        last_error = e.what();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    stop();
    throw std::runtime_error("postgres did not accept connections within 60 s: " + last_error + "; log: " +
                             tail(dir_ / "postgres.log"));
  }

  // Fast shutdown (disconnects clients, writes a checkpoint) and waits for the server to exit.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGINT);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    int status = 0;
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

  bool running() const { return pid_ > 0; }
  int port() const { return port_; }
  const std::filesystem::path& dir() const { return dir_; }

  // postgresql://postgres@127.0.0.1:<port>/<database> (trust authentication).
  std::string url(const std::string& database) const {
    return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" + database;
  }

  // Creates an empty database with a fresh name and returns its URL.
  std::string create_database() {
    const std::string name = "deeplens_test_" + std::to_string(++databases_);
    pqxx::connection c(url("postgres"));
    pqxx::nontransaction n(c);
    n.exec("CREATE DATABASE " + name);
    return url(name);
  }

 private:
  static int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ::close(fd);
      throw std::runtime_error(std::string("bind: ") + std::strerror(errno));
    }
    ::close(fd);
    return ntohs(addr.sin_port);
  }

  // Forks and execs argv as the server user with stdout/stderr appended to log. death_signal is
  // delivered to the child if this process dies first (0 = none).
  pid_t spawn(const std::vector<std::string>& argv, const std::filesystem::path& log, int death_signal) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) throw std::runtime_error("open " + log.string() + ": " + std::strerror(errno));
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(log_fd);
      throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
      // Only async-signal-safe calls from here on.
      const int null_fd = ::open("/dev/null", O_RDONLY);
      if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
      if (::chdir(dir_.c_str()) != 0) ::_exit(126);
      if (drop_privileges_) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(gid_) != 0 || ::setuid(uid_) != 0) ::_exit(126);
      }
      // After setuid: a credential change clears the parent-death signal.
      if (death_signal != 0) {
        ::prctl(PR_SET_PDEATHSIG, death_signal);
        if (::getppid() != parent) ::_exit(0);
      }
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(log_fd);
    return pid;
  }

  int run_and_wait(const std::vector<std::string>& argv, const std::filesystem::path& log) {
    const pid_t pid = spawn(argv, log, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  static std::string tail(const std::filesystem::path& path, size_t max = 2000) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    return s.size() > max ? s.substr(s.size() - max) : s;
  }

  std::filesystem::path bindir_;
  std::filesystem::path dir_;
  bool drop_privileges_ = false;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  int port_ = 0;
  pid_t pid_ = -1;
  int databases_ = 0;
};

}  // namespace deeplens::testing
