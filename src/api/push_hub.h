// PushHub: the real-time fan-out behind GET /api/v1/ws and GET /api/v1/events. PushFeed publishes
// each image's transitions here; WebSocket and SSE connections subscribe to a topic — "tenant"
// (every image of the tenant) or "image:<imageId>" — and receive the events published after they
// subscribed, or, with `since`, the ones they missed.
//
// Sequence numbers: per tenant, increasing by one per event. A process numbers from the time its
// hub started, in microseconds since the epoch (a value below 2^53, exact in JavaScript), so a
// `since` from an earlier run of this process, or from another process, falls outside this hub's
// range and is answered with a reset (the client then re-reads status over REST) instead of a
// wrong replay.
//
// History: the last history_events events of each tenant, none older than history_age. A `since`
// older than the oldest kept event (or beyond the current seq) is a reset.
//
// Thread-safety: every method may be called from any thread. Listeners are called with the hub's
// lock held, so on_event must be quick and must not call back into the hub; after unsubscribe_all
// returns, the listener is never called again.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/result.h"

namespace deeplens::api {

struct PushHubOptions {
  size_t history_events = 10000;              // push.history_events, per tenant
  std::chrono::seconds history_age{600};      // push.history_s
  int max_connections_per_tenant = 1000;      // push.max_connections_per_tenant
  int max_subscriptions_per_connection = 100; // push.max_subscriptions_per_connection
};

// One published event, rendered once and shared by every connection that sends it.
struct PushEvent {
  uint64_t seq = 0;
  std::string tenant_id;
  std::string image_id;
  std::string name;          // "StatusChanged", "ProcessingCompleted", "ProcessingFailed"
  std::string data;          // a JSON object (compact)
  std::string tenant_frame;  // {"type":"event","topic":"tenant","seq":...} as sent
  std::string image_frame;   // the same with "topic":"image:<id>"
  Timestamp at;

  const std::string& frame_for(const std::string& topic) const { return topic == "tenant" ? tenant_frame : image_frame; }
};
using PushEventPtr = std::shared_ptr<const PushEvent>;

// The WebSocket / SSE frame of an event for topic (data is a JSON object).
std::string push_event_frame(const std::string& topic, uint64_t seq, const std::string& name, const std::string& data);

class PushListener {
 public:
  virtual ~PushListener() = default;
  // An event for the subscription `subscription` (the id the listener chose). Hub lock held.
  virtual void on_event(uint64_t subscription, const PushEventPtr& event) = 0;
};

struct PushSubscribed {
  uint64_t seq = 0;                  // the tenant's current seq (the last event published)
  bool reset = false;                // `since` could not be served: the client must re-read status
  std::vector<PushEventPtr> replay;  // with `since`: the missed events of the topic, oldest first
};

class PushHub {
 public:
  PushHub(PushHubOptions options, const Clock& clock);

  // Assigns the tenant's next seq, keeps the event in history and hands it to the subscribers of
  // "tenant" and of "image:<image_id>". Returns the seq.
  uint64_t publish(const std::string& tenant_id, const std::string& image_id, const std::string& name,
                   const std::string& data);

  // Registers listener for topic ("tenant" or "image:<id>"; the caller checked that the image
  // belongs to the tenant). Atomic with publish: every event after the returned seq reaches the
  // listener. With since: the missed events from history, or reset.
  Result<PushSubscribed> subscribe(PushListener* listener, uint64_t subscription, const std::string& tenant_id,
                                   const std::string& topic, std::optional<uint64_t> since);
  void unsubscribe(PushListener* listener, uint64_t subscription);
  void unsubscribe_all(PushListener* listener);

  // Connection accounting per tenant: false (nothing counted) at the limit.
  bool open_connection(const std::string& tenant_id);
  void close_connection(const std::string& tenant_id);

  const PushHubOptions& options() const { return options_; }
  uint64_t base_seq() const { return base_; }
  // Figures for /metrics.
  size_t subscriptions() const;
  size_t connections() const;
  size_t history_size() const;

 private:
  struct Subscriber {
    PushListener* listener;
    uint64_t subscription;
  };
  struct TenantStream {
    uint64_t seq = 0;    // the last seq given out
    uint64_t floor = 0;  // every event with seq <= floor is gone from history
    std::deque<PushEventPtr> history;
    std::map<std::string, std::vector<Subscriber>> subscribers;  // topic -> subscribers
    int connections = 0;
  };
  TenantStream& stream(const std::string& tenant_id);  // mu_ held
  void trim(TenantStream& s, Timestamp now);           // mu_ held

  PushHubOptions options_;
  const Clock& clock_;
  uint64_t base_;
  mutable std::mutex mu_;
  std::map<std::string, TenantStream> tenants_;
  // Where each (listener, subscription) is registered: tenant and topic.
  std::map<std::pair<PushListener*, uint64_t>, std::pair<std::string, std::string>> index_;
};

}  // namespace deeplens::api
