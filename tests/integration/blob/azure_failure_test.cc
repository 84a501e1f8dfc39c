// How the Azure BlobStore behaves when the service or the world around it misbehaves: a wrong
// account key, a container or blob deleted behind DeepLens's back, the service down, a service that
// never answers, and a download cut off mid-body. Against a real Azurite.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "blob/azure/azure_blob_store.h"
#include "common/base64.h"
#include "common/http_client.h"
#include "support/azurite_server.h"

namespace deeplens {
namespace {

namespace fs = std::filesystem;
using testing::AzuriteServer;
using namespace std::chrono_literals;

class AzureFailures : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new AzuriteServer(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("deeplens-azfail-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  AzureBlobOptions options(const std::string& endpoint = "") {
    AzureBlobOptions o;
    o.account = azure::parse_connection_string(server_->connection_string()).value();
    if (!endpoint.empty()) o.account.endpoint = endpoint;
    o.spool_dir = dir_ / "spool";
    o.backoff = 20ms;
    return o;
  }
  std::unique_ptr<AzureBlobStore> open(AzureBlobOptions o) {
    auto s = AzureBlobStore::open(std::move(o), random_);
    EXPECT_TRUE(s.ok());
    return std::move(s).value();
  }
  // A signed request outside the store: what another tool (or an operator) does to the account.
  long raw(const std::string& method, const std::string& path, std::vector<std::pair<std::string, std::string>> query) {
    const auto account = azure::parse_connection_string(server_->connection_string()).value();
    azure::SignedRequest sr;
    sr.method = method;
    sr.path = "/" + account.name + path;
    sr.query = query;
    sr.headers = {{"x-ms-date", azure::http_date(std::time(nullptr))}, {"x-ms-version", std::string(azure::kApiVersion)}};
    ClientRequest req;
    req.method = method;
    req.url = account.endpoint + path;
    for (size_t i = 0; i < query.size(); ++i) req.url += (i ? "&" : "?") + query[i].first + "=" + query[i].second;
    req.headers = sr.headers;
    req.headers.emplace_back("Authorization", azure::authorization(sr, account));
    auto r = http_.perform(req);
    EXPECT_TRUE(r.ok());
    return r ? r->status : 0;
  }

  static inline AzuriteServer* server_ = nullptr;
  fs::path dir_;
  SeededRandom random_{7};
  HttpClient http_;
};

const std::vector<uint8_t> kBytes(3000, 0x5a);

TEST_F(AzureFailures, AWrongKeyIsRefusedNamingTheAccountNeverTheKey) {
  auto o = options();
  const std::string wrong = base64_encode(std::string(64, 'w'));
  o.account.key = std::string(64, 'w');
  auto store = open(o);
  for (const Status& st : {store->ping(), store->put("tenant-acme/images/2026/12/02/a.jpg", kBytes)}) {
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code, ErrorCode::kUnavailable);
    const std::string text = st.error().to_string();
    EXPECT_NE(text.find("credentials of account 'devstoreaccount1'"), std::string::npos) << text;
    EXPECT_NE(text.find("403"), std::string::npos) << text;
    EXPECT_EQ(text.find(wrong), std::string::npos) << text;
  }
}

TEST_F(AzureFailures, AContainerDeletedBehindOurBackIsCreatedAgainOnTheNextWrite) {
  auto store = open(options());
  const std::string a = "tenant-gone/images/2026/12/02/a.jpg";
  ASSERT_TRUE(store->put(a, kBytes).ok());
  ASSERT_EQ(raw("DELETE", "/gone-images", {{"restype", "container"}}), 202);
  auto missing = store->read(a);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message.find("container does not exist"), std::string::npos) << missing.error().message;
  // Azure takes a moment to really delete a container (409 ContainerBeingDeleted meanwhile); Azurite
  // deletes at once, and the store's cache still believes the container exists.
  const std::string b = "tenant-gone/images/2026/12/02/b.jpg";
  auto st = store->put(b, kBytes);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_TRUE(store->read(b).ok());
}

TEST_F(AzureFailures, ABlobDeletedBehindOurBackIsNotFoundNamingIt) {
  auto store = open(options());
  const std::string k = "tenant-acme/images/2026/12/02/deleted.jpg";
  ASSERT_TRUE(store->put(k, kBytes).ok());
  ASSERT_EQ(raw("DELETE", "/acme-images/2026/12/02/deleted.jpg", {}), 202);
  auto r = store->read(k);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  EXPECT_NE(r.error().message.find("blob not found"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("acme-images/2026/12/02/deleted.jpg"), std::string::npos) << r.error().message;
  EXPECT_FALSE(store->exists(k));
}

TEST_F(AzureFailures, AnOutageIsUnavailableAfterTheRetriesAndTheStoreRecovers) {
  AzuriteServer own;  // a server of its own to stop
  auto o = options(own.endpoint());
  o.max_attempts = 3;
  auto store = open(o);
  const std::string k = "tenant-acme/images/2026/12/02/outage.jpg";
  ASSERT_TRUE(store->put(k, kBytes).ok());
  own.stop();
  const auto t0 = std::chrono::steady_clock::now();
  auto st = store->put(k, kBytes);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(st.error().message.find("after 3 attempts"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find(own.endpoint()), std::string::npos) << st.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_FALSE(store->ping().ok());
  own.start();
  EXPECT_TRUE(store->ping().ok());
  auto again = store->put(k, kBytes);
  EXPECT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_TRUE(store->read(k).ok());
}

// A listening socket that accepts connections (through the backlog) and never answers.
class SilentServer {
 public:
  SilentServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(fd_, 64);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~SilentServer() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_;
  int port_;
};

TEST_F(AzureFailures, AServiceThatNeverAnswersTimesOut) {
  SilentServer silent;
  auto o = options("http://127.0.0.1:" + std::to_string(silent.port()) + "/devstoreaccount1");
  o.timeout = 300ms;
  o.max_attempts = 2;
  auto store = open(o);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = store->read("tenant-acme/images/2026/12/02/slow.jpg");
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kTimeout) << r.error().to_string();
  EXPECT_NE(r.error().message.find("after 2 attempts"), std::string::npos) << r.error().message;
  EXPECT_GE(took, 600ms);
  EXPECT_LT(took, 3s);
  auto st = store->put("tenant-acme/images/2026/12/02/slow.jpg", kBytes);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kTimeout);
}

// A TCP proxy in front of Azurite that, once armed, cuts the next answer after `cut_after` bytes.
class CuttingProxy {
 public:
  explicit CuttingProxy(int upstream_port) : upstream_(upstream_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(listen_fd_, 16);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~CuttingProxy() {
    stopping_ = true;
    ::shutdown(listen_fd_, SHUT_RDWR);  // wakes the accept()
    acceptor_.join();
    ::close(listen_fd_);
    for (auto& t : pumps_) t.join();
  }
  int port() const { return port_; }
  void arm(size_t cut_after) { cut_after_ = cut_after; }
  int cuts() const { return cuts_; }

 private:
  void accept_loop() {
    while (!stopping_) {
      const int client = ::accept(listen_fd_, nullptr, nullptr);
      if (client < 0) return;
      const int up = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(static_cast<uint16_t>(upstream_));
      if (::connect(up, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(client);
        ::close(up);
        continue;
      }
      // Both pumps use both descriptors; the last one to finish closes them (closing one
      // while the other pump still reads it would be a race on the descriptor).
      auto fds = std::shared_ptr<int[]>(new int[2]{client, up}, [](int* p) {
        ::close(p[0]);
        ::close(p[1]);
        delete[] p;
      });
      pumps_.emplace_back([fds] { pump(fds[0], fds[1], nullptr); ::shutdown(fds[1], SHUT_WR); });
      pumps_.emplace_back([this, fds] {
        pump(fds[1], fds[0], this);
        ::shutdown(fds[0], SHUT_RDWR);
      });
    }
  }
  static void pump(int from, int to, CuttingProxy* cutter) {
    char buf[8192];
    size_t budget = 0;
    bool armed = false;
    while (true) {
      const ssize_t n = ::recv(from, buf, sizeof buf, 0);
      if (n <= 0) return;
      size_t send_n = static_cast<size_t>(n);
      if (cutter && !armed && cutter->cut_after_ > 0) {
        budget = cutter->cut_after_.exchange(0);
        armed = budget > 0;
      }
      if (armed) {
        send_n = std::min(send_n, budget);
        budget -= send_n;
      }
      if (::send(to, buf, send_n, MSG_NOSIGNAL) < 0) return;
      if (armed && budget == 0) {
        ++cutter->cuts_;
        ::shutdown(to, SHUT_RDWR);  // the client sees the answer end early
        ::shutdown(from, SHUT_RDWR);
        return;
      }
    }
  }

  int upstream_;
  int listen_fd_;
  int port_;
  std::atomic<bool> stopping_{false};
  std::atomic<size_t> cut_after_{0};
  std::atomic<int> cuts_{0};
  std::thread acceptor_;
  std::vector<std::thread> pumps_;  // only the acceptor thread adds; joined after it ended
};

TEST_F(AzureFailures, ADownloadCutOffMidBodyResumesWhereItStopped) {
  CuttingProxy proxy(server_->port());
  auto o = options("http://127.0.0.1:" + std::to_string(proxy.port()) + "/devstoreaccount1");
  auto store = open(o);
  std::vector<uint8_t> data(600 << 10);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  const std::string k = "tenant-acme/images/2026/12/02/cut.jpg";
  ASSERT_TRUE(store->put(k, data).ok());
  proxy.arm(200 << 10);  // the next answer stops after 200 KiB (headers included)
  auto got = store->read(k);
  ASSERT_TRUE(got.ok()) << got.error().to_string();
  EXPECT_EQ(proxy.cuts(), 1);
  ASSERT_EQ(got->size(), data.size());
  EXPECT_TRUE(std::equal(data.begin(), data.end(), got->begin(),
                         [](uint8_t a, char b) { return a == static_cast<uint8_t>(b); }));
}

}  // namespace
}  // namespace deeplens
