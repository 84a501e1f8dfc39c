#include "common/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <mutex>

namespace deeplens {
namespace {

void init_curl_once() {
  static std::once_flag once;
  // Never cleaned up: libcurl's global state lives as long as the process.
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

struct Transfer {
  const ClientRequest* request = nullptr;
  ClientResponse* response = nullptr;
  CURL* handle = nullptr;
  bool overflow = false;
  bool sink_stopped = false;
};

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  std::string_view line(data, n);
  if (line.rfind("HTTP/", 0) == 0) {
    t->response->headers.clear();  // a new response (after a 100 Continue, or a redirect)
    return n;
  }
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  std::string name(line.substr(0, colon));
  for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  t->response->headers.emplace_back(std::move(name), trim(line.substr(colon + 1)));
  return n;
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  t->response->body_bytes += n;
  if (t->request->sink) {
    curl_easy_getinfo(t->handle, CURLINFO_RESPONSE_CODE, &t->response->status);
    if (!t->request->sink(*t->response, std::string_view(data, n))) {
      t->sink_stopped = true;
      return 0;  // CURLE_WRITE_ERROR
    }
    return n;
  }
  if (t->response->body.size() + n > t->request->max_body) {
    t->overflow = true;
    return 0;
  }
  t->response->body.append(data, n);
  return n;
}

}  // namespace

const std::string* ClientResponse::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return &v;
  return nullptr;
}

std::string url_without_query(std::string_view url) {
  const auto cut = url.find_first_of("?#");
  return std::string(url.substr(0, cut));
}

struct HttpClient::Pool {
  std::mutex mu;
  std::vector<CURL*> idle;  // guarded by mu

  CURL* take() {
    {
      std::lock_guard lock(mu);
      if (!idle.empty()) {
        CURL* h = idle.back();
        idle.pop_back();
        return h;
      }
    }
    return curl_easy_init();
  }
  void give_back(CURL* h) {
    std::lock_guard lock(mu);
    idle.push_back(h);
  }
  ~Pool() {
    for (CURL* h : idle) curl_easy_cleanup(h);
  }
};

HttpClient::HttpClient() : pool_(std::make_unique<Pool>()) { init_curl_once(); }
HttpClient::~HttpClient() = default;

Result<ClientResponse> HttpClient::perform(const ClientRequest& request) {
  const std::string where = request.method + " " + url_without_query(request.url);
  CURL* h = pool_->take();
  if (!h) return Error(ErrorCode::kInternal, "curl_easy_init failed").with("url", url_without_query(request.url));

  ClientResponse response;
  Transfer transfer{&request, &response, h};
  char curl_error[CURL_ERROR_SIZE] = {0};

  curl_slist* headers = nullptr;
  bool has_content_type = false;
  for (const auto& [name, value] : request.headers) {
    headers = curl_slist_append(headers, (name + ": " + value).c_str());
    std::string lower = name;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    has_content_type |= lower == "content-type";
  }
  headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip
  if (!has_content_type) headers = curl_slist_append(headers, "Content-Type:");  // not curl's form default

  curl_easy_reset(h);  // keeps the connection cache
  curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  if (request.method == "GET") {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else if (request.method == "HEAD") {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    if (request.method != "DELETE" || !request.body.empty()) {
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body.data());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    }
  }
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count()));
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(request.connect_timeout.count()));
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // required with timeouts in threaded programs
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &transfer);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_error);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "deeplens");

  const CURLcode rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response.status);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, nullptr);
  curl_slist_free_all(headers);
  pool_->give_back(h);

  if (rc == CURLE_OK) return response;
  const std::string detail = curl_error[0] ? curl_error : curl_easy_strerror(rc);
  auto fail = [&](ErrorCode code, const std::string& why) {
    return Error(code, where + ": " + why)
        .with("url", url_without_query(request.url))
        .with("curl_code", std::to_string(static_cast<int>(rc)));
  };
  if (transfer.sink_stopped) return fail(ErrorCode::kCancelled, "stopped by the reader");
  if (transfer.overflow)
    return fail(ErrorCode::kResourceExhausted, "answer larger than " + std::to_string(request.max_body) + " bytes");
  if (rc == CURLE_OPERATION_TIMEDOUT)
    return fail(ErrorCode::kTimeout, "no answer within " + std::to_string(request.timeout.count()) + " ms (" + detail + ")")
        .with("timeout_ms", std::to_string(request.timeout.count()));
  const bool connect = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY;
  return fail(ErrorCode::kUnavailable, std::string(connect ? "cannot connect" : "request failed") + " (" + detail + ")");
}

}  // namespace deeplens
