#include "webhooks/dispatcher.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>
#include <list>
#include <mutex>
#include <set>

#include "common/log.h"
#include "webhooks/signature.h"
#include "webhooks/url_policy.h"

namespace deeplens::webhooks {
namespace {

using std::chrono::milliseconds;

int64_t unix_seconds(Timestamp t) { return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count(); }

std::string address_text(const sockaddr* a) {
  char text[INET6_ADDRSTRLEN] = {};
  if (a->sa_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a)->sin_addr, text, sizeof text);
  else if (a->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr, text, sizeof text);
  return text;
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

}  // namespace

std::optional<milliseconds> parse_retry_after(std::string_view value, Timestamp now) {
  const std::string v = trim(value);
  if (v.empty()) return std::nullopt;
  if (std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (v.size() > 9) return std::chrono::hours(24 * 365);
    return std::chrono::seconds(std::stoll(v));
  }
  const time_t at = curl_getdate(v.c_str(), nullptr);
  if (at < 0) return std::nullopt;
  const auto delta = std::chrono::seconds(at) - std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch());
  return std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(delta));
}

AttemptOutcome decide_outcome(const WireResult& wire, int attempts_before, const WebhookEndpoint& endpoint,
                              Timestamp now, int64_t duration_ms, const DispatcherOptions& options,
                              double jitter_draw) {
  AttemptOutcome o;
  o.attempt.at = now;
  o.attempt.http_status = wire.http_status;
  o.attempt.duration_ms = duration_ms;
  if (wire.error.empty() && wire.http_status >= 200 && wire.http_status < 300) {
    o.status = DeliveryStatus::kSucceeded;
    return o;
  }
  o.attempt.error = !wire.error.empty() ? wire.error : "the endpoint answered HTTP " + std::to_string(wire.http_status);
  if (wire.http_status == 410) {
    o.status = DeliveryStatus::kFailed;
    o.disable_endpoint = "the endpoint answered 410 Gone";
    return o;
  }
  const size_t retry = static_cast<size_t>(attempts_before);  // index of the wait before the next attempt
  if (retry >= options.schedule.size()) {
    o.status = DeliveryStatus::kFailed;
  } else {
    const double factor = 1.0 - options.jitter + 2.0 * options.jitter * jitter_draw;
    milliseconds wait(static_cast<int64_t>(static_cast<double>(options.schedule[retry].count()) * factor));
    if ((wire.http_status == 429 || wire.http_status == 503) && wire.retry_after) {
      // Honour the receiver's wish, within the schedule's longest wait.
      const milliseconds longest = *std::max_element(options.schedule.begin(), options.schedule.end());
      wait = std::min(std::max(*wire.retry_after, milliseconds(0)), longest);
    }
    o.status = DeliveryStatus::kPending;
    o.next_attempt_at = now + wait;
  }
  if (endpoint.failing_since && now - *endpoint.failing_since >= options.disable_after)
    o.disable_endpoint = "failing continuously since " + format_iso8601(*endpoint.failing_since);
  return o;
}

// ------------------------------------------------------------------------------------------------

struct Transfer {
  ClaimedDelivery claimed;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::chrono::steady_clock::time_point started;
  size_t received = 0;
  bool body_cut = false;
  std::string refused;  // the socket callback refused the address (why)
  std::string location;
  std::string retry_after;
  char error[CURL_ERROR_SIZE] = {};
  const DispatcherOptions* options = nullptr;
  ~Transfer() {
    if (easy) curl_easy_cleanup(easy);
    if (headers) curl_slist_free_all(headers);
  }
};

struct WebhookDispatcher::Impl {
  WebhookStore& store;
  const SecretBox& secrets;
  const Clock& clock;
  RandomSource& random;
  Metrics& metrics;
  DispatcherOptions options;
  CURLM* multi = nullptr;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::atomic<bool> kicked{false};
  std::list<std::unique_ptr<Transfer>> in_flight;  // thread only

  Impl(WebhookStore& s, const SecretBox& b, const Clock& c, RandomSource& r, Metrics& m, DispatcherOptions o)
      : store(s), secrets(b), clock(c), random(r), metrics(m), options(std::move(o)) {
    static std::once_flag curl_once;  // curl_global_init is not thread-safe: once per process
    std::call_once(curl_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    multi = curl_multi_init();
  }
  ~Impl() {
    if (multi) curl_multi_cleanup(multi);
  }

  double draw() { return static_cast<double>(random.next_u64() >> 11) / static_cast<double>(1ULL << 53); }

  static size_t on_body(char*, size_t size, size_t n, void* user) {
    auto* t = static_cast<Transfer*>(user);
    t->received += size * n;
    if (t->received > t->options->max_response_bytes) {
      t->body_cut = true;
      return 0;  // aborts the transfer: the status line is what counts
    }
    return size * n;
  }

  static size_t on_header(char* data, size_t size, size_t n, void* user) {
    auto* t = static_cast<Transfer*>(user);
    const std::string_view line(data, size * n);
    auto value_of = [&](std::string_view name) -> std::optional<std::string> {
      if (line.size() <= name.size() || line[name.size()] != ':') return std::nullopt;
      for (size_t i = 0; i < name.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return std::nullopt;
      return trim(line.substr(name.size() + 1));
    };
    if (auto v = value_of("retry-after")) t->retry_after = *v;
    if (auto v = value_of("location")) t->location = *v;
    return size * n;
  }

  static curl_socket_t on_open_socket(void* user, curlsocktype, curl_sockaddr* address) {
    auto* t = static_cast<Transfer*>(user);
    if (!t->options->allow_private_networks) {
      const std::string why = forbidden_address_reason(&address->addr);
      if (!why.empty()) {
        t->refused = address_text(&address->addr) + " (" + why + ")";
        return CURL_SOCKET_BAD;
      }
    }
    return ::socket(address->family, address->socktype, address->protocol);
  }

  // The endpoint's secrets in clear: the current one, and the previous one during its overlap.
  Result<std::vector<std::string>> signing_secrets(const WebhookEndpoint& e, Timestamp now) {
    std::vector<std::string> out;
    auto current = secrets.open(e.secret);
    if (!current) return std::move(current).error();
    out.push_back(std::move(current).value());
    if (!e.previous_secret.empty() && e.previous_secret_until && now < *e.previous_secret_until) {
      auto previous = secrets.open(e.previous_secret);
      if (previous) out.push_back(std::move(previous).value());
    }
    return out;
  }

  void begin(ClaimedDelivery claimed) {
    auto t = std::make_unique<Transfer>();
    t->claimed = std::move(claimed);
    t->options = &options;
    const auto& d = t->claimed.delivery;
    const Timestamp now = clock.now();
    auto keys = signing_secrets(t->claimed.endpoint, now);
    std::string signature;
    if (keys) {
      auto header = signature_header(*keys, d.id, unix_seconds(now), d.payload);
      if (header) signature = std::move(header).value();
    }
    if (signature.empty()) {
      finish_without_sending(*t, keys ? "the delivery could not be signed" : keys.error().message);
      return;
    }
    t->easy = curl_easy_init();
    if (!t->easy) {
      finish_without_sending(*t, "libcurl could not start a transfer");
      return;
    }
    for (const std::string& h : {std::string("Content-Type: application/json"), "User-Agent: " + options.user_agent,
                                 "webhook-id: " + d.id, "webhook-timestamp: " + std::to_string(unix_seconds(now)),
                                 "webhook-signature: " + signature, std::string("Expect:")})
      t->headers = curl_slist_append(t->headers, h.c_str());
    CURL* e = t->easy;
    curl_easy_setopt(e, CURLOPT_URL, t->claimed.endpoint.url.c_str());
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");  // never through an environment proxy: the address check is ours
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(options.timeout.count()));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options.timeout.count()));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, d.payload.data());
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(d.payload.size()));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Impl::on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Impl::on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get());
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &Impl::on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t.get());
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
    t->started = std::chrono::steady_clock::now();
    if (curl_multi_add_handle(multi, e) != CURLM_OK) {
      finish_without_sending(*t, "libcurl could not start a transfer");
      return;
    }
    in_flight.push_back(std::move(t));
  }

  void finish_without_sending(Transfer& t, const std::string& error) {
    WireResult wire;
    wire.error = error;
    record(t, wire, 0);
  }

  void finish(Transfer& t, CURLcode code) {
    const auto elapsed = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - t.started);
    long status = 0;
    curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &status);
    WireResult wire;
    wire.http_status = static_cast<int>(status);
    if (!t.refused.empty()) {
      wire.http_status = 0;
      wire.error = "refused to connect to " + t.refused +
                   ": webhooks do not go to private networks (webhooks.allow_private_networks)";
    } else if (code == CURLE_WRITE_ERROR && t.body_cut && status > 0) {
      // The status line and headers arrived; the body past the limit is not read.
    } else if (code == CURLE_OPERATION_TIMEDOUT) {
      wire.error = "no complete answer within " + std::to_string(options.timeout.count()) + " ms";
      if (status > 0) wire.error += " (HTTP " + std::to_string(status) + " started)";
      wire.http_status = 0;
    } else if (code != CURLE_OK) {
      wire.error = t.error[0] ? std::string(t.error) : std::string(curl_easy_strerror(code));
      wire.http_status = 0;
    }
    if (wire.error.empty() && status >= 300 && status < 400)
      wire.error = "the endpoint answered HTTP " + std::to_string(status) + " (redirect to '" + t.location +
                   "'); redirects are not followed";
    if ((status == 429 || status == 503) && !t.retry_after.empty())
      wire.retry_after = parse_retry_after(t.retry_after, clock.now());
    record(t, wire, elapsed.count());
  }

  void record(Transfer& t, const WireResult& wire, int64_t duration_ms) {
    const auto& d = t.claimed.delivery;
    AttemptOutcome outcome =
        decide_outcome(wire, d.attempt_count, t.claimed.endpoint, clock.now(), duration_ms, options, draw());
    const char* label = outcome.status == DeliveryStatus::kSucceeded ? "succeeded"
                        : outcome.status == DeliveryStatus::kFailed  ? "failed"
                                                                      : "retrying";
    metrics.add("deeplens_webhook_deliveries_total", {{"outcome", label}});
    metrics.observe("deeplens_webhook_attempt_seconds", {{"outcome", label}}, static_cast<double>(duration_ms) / 1000.0);
    if (outcome.status != DeliveryStatus::kSucceeded)
      log_info("webhook.attempt_failed", {{"deliveryId", d.id},
                                          {"endpointId", d.endpoint_id},
                                          {"attempt", std::to_string(d.attempt_count + 1)},
                                          {"httpStatus", std::to_string(outcome.attempt.http_status)},
                                          {"error", outcome.attempt.error},
                                          {"outcome", label}});
    if (!outcome.disable_endpoint.empty())
      log_warn("webhook.endpoint_disabled", {{"endpointId", d.endpoint_id}, {"reason", outcome.disable_endpoint}});
    if (auto st = store.record_attempt(d.id, outcome); !st)
      log_warn("webhook.record_failed", {{"deliveryId", d.id}, {"error", st.error().to_string()}});
  }

  void reap() {
    int left = 0;
    while (CURLMsg* m = curl_multi_info_read(multi, &left)) {
      if (m->msg != CURLMSG_DONE) continue;
      Transfer* t = nullptr;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &t);
      const CURLcode code = m->data.result;
      curl_multi_remove_handle(multi, m->easy_handle);
      if (!t) continue;
      finish(*t, code);
      in_flight.remove_if([t](const std::unique_ptr<Transfer>& p) { return p.get() == t; });
    }
  }

  void trim_log() {
    auto removed = store.trim_deliveries(clock.now() - options.retention);
    if (!removed) log_warn("webhook.trim_failed", {{"error", removed.error().to_string()}});
    else if (*removed > 0) log_info("webhook.log_trimmed", {{"removed", static_cast<long long>(*removed)}});
  }

  void run() {
    const milliseconds lease = options.timeout + std::chrono::seconds(30);
    auto next_claim = std::chrono::steady_clock::now();
    auto next_trim = std::chrono::steady_clock::now();
    while (!stopping) {
      if (std::chrono::steady_clock::now() >= next_trim) {
        trim_log();
        next_trim = std::chrono::steady_clock::now() + options.trim_interval;
      }
      const int free = options.concurrency - static_cast<int>(in_flight.size());
      const auto now_steady = std::chrono::steady_clock::now();
      if (free > 0 && (now_steady >= next_claim || kicked.exchange(false))) {
        auto claimed = store.claim_deliveries(options.owner, clock.now(), lease, free, options.per_endpoint);
        if (!claimed) {
          log_warn("webhook.claim_failed", {{"error", claimed.error().to_string()}});
          next_claim = now_steady + std::chrono::seconds(1);
        } else {
          const bool more = static_cast<int>(claimed->size()) == free;
          for (auto& c : *claimed) begin(std::move(c));
          next_claim = more ? now_steady : now_steady + options.poll;
        }
      }
      int running = 0;
      curl_multi_perform(multi, &running);
      reap();
      const auto until_claim =
          std::chrono::duration_cast<milliseconds>(next_claim - std::chrono::steady_clock::now()).count();
      const int wait = static_cast<int>(std::clamp<int64_t>(until_claim, 0, options.poll.count()));
      if (in_flight.size() < static_cast<size_t>(options.concurrency) && wait == 0) continue;
      curl_multi_poll(multi, nullptr, 0, std::max(wait, 1), nullptr);
      curl_multi_perform(multi, &running);
      reap();
    }
    // Stopping: let what is in flight finish for a moment; the rest keeps its lease and goes again later.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (!in_flight.empty() && std::chrono::steady_clock::now() < deadline) {
      int running = 0;
      curl_multi_poll(multi, nullptr, 0, 50, nullptr);
      curl_multi_perform(multi, &running);
      reap();
    }
    for (auto& t : in_flight) curl_multi_remove_handle(multi, t->easy);
    in_flight.clear();
  }
};

WebhookDispatcher::WebhookDispatcher(WebhookStore& store, const SecretBox& secrets, const Clock& clock,
                                     RandomSource& random, Metrics& metrics, DispatcherOptions options)
    : impl_(std::make_unique<Impl>(store, secrets, clock, random, metrics, std::move(options))) {
  metrics.describe("deeplens_webhook_deliveries_total", "counter", "webhook delivery attempts by outcome");
  metrics.describe("deeplens_webhook_attempt_seconds", "histogram", "webhook attempt latency by outcome");
  metrics.describe("deeplens_webhook_queue_depth", "gauge", "pending webhook deliveries by endpoint");
  struct Reported {
    std::mutex mu;
    std::set<std::string> endpoints;  // reported before: shown as 0 once drained
  };
  metrics.add_collector([&store, reported = std::make_shared<Reported>()](Metrics& m) {
    auto pending = store.pending_deliveries();
    if (!pending) return;
    std::lock_guard lock(reported->mu);
    std::set<std::string> now;
    for (const auto& [endpoint, n] : *pending) {
      m.set("deeplens_webhook_queue_depth", {{"endpoint", endpoint}}, static_cast<double>(n));
      now.insert(endpoint);
    }
    for (const auto& e : reported->endpoints)
      if (!now.contains(e)) m.set("deeplens_webhook_queue_depth", {{"endpoint", e}}, 0);
    reported->endpoints = std::move(now);
  });
}

WebhookDispatcher::~WebhookDispatcher() { stop(); }

Status WebhookDispatcher::start() {
  if (impl_->thread.joinable()) return {};
  if (!impl_->multi) return Error(ErrorCode::kInternal, "libcurl could not start (curl_multi_init)");
  impl_->stopping = false;
  impl_->thread = std::thread([this] { impl_->run(); });
  // Deliveries this process queues go out at once, not at the next poll.
  impl_->store.on_deliveries_queued([this] { notify(); });
  return {};
}

void WebhookDispatcher::stop() {
  if (!impl_->thread.joinable()) return;
  impl_->store.on_deliveries_queued(nullptr);
  impl_->stopping = true;
  curl_multi_wakeup(impl_->multi);
  impl_->thread.join();
}

void WebhookDispatcher::notify() {
  impl_->kicked = true;
  if (impl_->multi) curl_multi_wakeup(impl_->multi);
}

}  // namespace deeplens::webhooks
