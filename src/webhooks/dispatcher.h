// WebhookDispatcher: sends due webhook deliveries (WebhookStore) to their endpoints and records
// each attempt. One thread drives up to `concurrency` transfers at once through libcurl's multi
// interface; a delivery is claimed under a lease before it is sent, so any number of dispatchers
// (api/serve processes) share the queue without sending one delivery twice at once. At-least-once:
// a dispatcher that dies mid-send leaves its lease to run out, and the delivery goes again with
// the same webhook-id.
//
// Each attempt is signed anew (Standard Webhooks: webhook-id, webhook-timestamp,
// webhook-signature, with both secrets during a rotation's overlap). Success is a 2xx within the
// timeout; redirects are not followed; at most max_response_bytes of a response are read. A
// failure is retried on the schedule (with jitter; Retry-After honoured on 429/503) and given up
// after the last entry; 410 Gone disables the endpoint, and so does failing continuously for
// disable_after. The socket callback refuses forbidden addresses (url_policy.h) at connect time.
//
// Thread-safety: start()/stop() from the owning thread; notify() from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "store/webhook_store.h"
#include "webhooks/secret_box.h"

namespace deeplens::webhooks {

struct DispatcherOptions {
  std::string owner = "dispatcher";  // lease owner: unique per process
  std::chrono::milliseconds timeout{10000};  // webhooks.timeout_s: whole attempt, connect to last byte
  // webhooks.retry_schedule_s: the wait before each retry; attempts = entries + 1.
  std::vector<std::chrono::milliseconds> schedule{std::chrono::seconds(5),     std::chrono::minutes(5),
                                                  std::chrono::minutes(30),    std::chrono::hours(2),
                                                  std::chrono::hours(5),       std::chrono::hours(10),
                                                  std::chrono::hours(14),      std::chrono::hours(20),
                                                  std::chrono::hours(24)};
  double jitter = 0.2;  // each wait is drawn from [1 - jitter, 1 + jitter] x the entry
  std::chrono::milliseconds disable_after = std::chrono::hours(24 * 5);  // webhooks.disable_after_s
  int concurrency = 16;   // webhooks.concurrency: transfers at once in this process
  int per_endpoint = 4;   // webhooks.per_endpoint_concurrency: per endpoint, across processes
  size_t max_response_bytes = 64 * 1024;
  bool allow_private_networks = false;  // webhooks.allow_private_networks
  // Look for due deliveries this often: retries, and what other processes queued (this process's
  // own commits wake the dispatcher at once, WebhookStore::on_deliveries_queued).
  std::chrono::milliseconds poll{100};
  std::string user_agent = "DeepLens";
  // webhooks.retention_s: succeeded and failed deliveries are removed from the log after this long
  // (checked every trim_interval).
  std::chrono::milliseconds retention = std::chrono::hours(24 * 30);
  std::chrono::milliseconds trim_interval = std::chrono::hours(1);
};

// What an attempt came to on the wire.
struct WireResult {
  int http_status = 0;  // 0: no response
  std::string error;    // empty: a response arrived
  std::optional<std::chrono::milliseconds> retry_after;  // from a 429/503's Retry-After
};

// The outcome of an attempt: pure, for tests. `attempts_before` attempts were made before this
// one; jitter_draw in [0, 1).
AttemptOutcome decide_outcome(const WireResult& wire, int attempts_before, const WebhookEndpoint& endpoint,
                              Timestamp now, int64_t duration_ms, const DispatcherOptions& options,
                              double jitter_draw);

// Parses a Retry-After value: delay-seconds or an HTTP-date (RFC 9110); nullopt when neither.
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value, Timestamp now);

class WebhookDispatcher {
 public:
  WebhookDispatcher(WebhookStore& store, const SecretBox& secrets, const Clock& clock, RandomSource& random,
                    Metrics& metrics, DispatcherOptions options);
  ~WebhookDispatcher();

  Status start();
  // Stops claiming, gives transfers in flight up to 2 s to finish (the rest are retried by
  // whoever claims them after their lease), then joins.
  void stop();
  // New deliveries may be due: look now rather than at the next poll.
  void notify();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace deeplens::webhooks
