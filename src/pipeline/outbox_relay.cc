#include "pipeline/outbox_relay.h"

#include <algorithm>

#include "common/ids.h"
#include "common/log.h"

namespace deeplens {

OutboxRelay::OutboxRelay(MetadataStore& store, EventBus& bus, Metrics& metrics, OutboxRelayOptions options)
    : store_(store), bus_(bus), metrics_(metrics), options_(options) {
  if (options_.relay_id.empty()) {
    SystemRandom random;
    options_.relay_id = "relay-" + IdGenerator(random).hex(8);
  }
  metrics_.describe("deeplens_outbox_published_total", "counter", "Outbox events published to the bus");
  metrics_.describe("deeplens_outbox_publish_seconds", "histogram", "Time to publish one outbox event (until durable)");
}

OutboxRelay::~OutboxRelay() { stop(); }

Status OutboxRelay::start() {
  if (thread_.joinable()) return {};
  if (options_.batch < 1) return Error(ErrorCode::kInvalidArgument, "outbox relay batch must be >= 1");
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
  log_info("outbox_relay.started");
  return {};
}

void OutboxRelay::stop() {
  if (!thread_.joinable()) return;
  stopping_ = true;
  notify();
  thread_.join();
  log_info("outbox_relay.stopped", {{"published", static_cast<long long>(published_.load())}});
}

void OutboxRelay::notify() {
  {
    std::lock_guard lock(mu_);
    notified_ = true;
  }
  cv_.notify_one();
}

void OutboxRelay::wait(std::chrono::milliseconds timeout, bool until_notified) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return (until_notified && notified_) || stopping_; });
  notified_ = false;
}

Result<int> OutboxRelay::relay_pending() {
  auto rows = store_.pending_outbox(options_.relay_id, options_.batch, options_.lease);
  if (!rows) return std::move(rows).error();
  std::vector<OutboxMessage> messages;
  messages.reserve(rows->size());
  for (auto& row : *rows) messages.push_back(std::move(row.message));
  const auto t0 = std::chrono::steady_clock::now();
  // Never skip a row: after a failure the next round starts again from the first undelivered one.
  const PublishOutcome outcome = bus_.publish_batch(messages);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (seconds * 1000 > static_cast<double>(options_.lease.count()) / 2)
    log_warn("outbox_relay.slow_publish", {{"seconds", seconds}, {"leaseMs", static_cast<long long>(options_.lease.count())},
                                           {"hint", "raise the relay lease above the bus's publish timeout"}});
  for (size_t i = 0; i < outcome.delivered; ++i)
    metrics_.observe("deeplens_outbox_publish_seconds", {}, seconds);
  std::vector<int64_t> sent;
  sent.reserve(outcome.delivered);
  for (size_t i = 0; i < outcome.delivered; ++i) sent.push_back((*rows)[i].seq);
  Status failure = outcome.status;
  if (!failure && outcome.delivered < rows->size())
    failure = std::move(failure).error().with("seq", std::to_string((*rows)[outcome.delivered].seq));
  // Mark what the bus confirmed, even when a later row failed.
  if (auto st = store_.mark_outbox_sent(sent); !st) return std::move(st).error();
  published_ += static_cast<int64_t>(sent.size());
  metrics_.add("deeplens_outbox_published_total", {}, static_cast<double>(sent.size()));
  if (!failure) return std::move(failure).error();
  return static_cast<int>(sent.size());
}

void OutboxRelay::run() {
  auto backoff = options_.initial_backoff;
  while (!stopping_) {
    auto published = relay_pending();
    if (!published) {
      if (!backing_off_.exchange(true))
        log_warn("outbox_relay.backing_off", {{"error", published.error().to_string()}});
      wait(backoff, false);  // new rows do not cut a back-off short; the next round retries the same row
      backoff = std::min(backoff * 2, options_.max_backoff);
      continue;
    }
    if (backing_off_.exchange(false)) log_info("outbox_relay.recovered");
    backoff = options_.initial_backoff;
    if (*published < options_.batch) wait(options_.idle_poll, true);  // drained: sleep until notified
  }
}

}  // namespace deeplens
