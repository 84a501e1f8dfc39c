// The real-time protocol over one connection (schemas/asyncapi-realtime.yaml):
//
// WebSocket (GET /api/v1/ws). Client messages (JSON text frames):
//   {"type":"auth","apiKey":"..."}                      first, unless the upgrade carried a key;
//                                                       none within auth_timeout closes with 4401
//   {"type":"subscribe","id":N,"topic":"tenant"|"image:img_...","since":SEQ?}
//   {"type":"unsubscribe","id":N}
//   {"type":"ping"}
// Server messages: authenticated, subscribed {id, topic, seq}, event {topic, seq, event, data},
// reset {id, topic, seq}, unsubscribed {id}, pong, error {id?, error:{code, message}}.
//
// Subscribing to an image sends its current status first (a StatusChanged with transition
// "snapshot" and the seq of the subscription), so a client that subscribes after the image
// completed is not left waiting; with `since` the missed events are replayed instead (or reset).
// Events published while a subscription is being set up are held and sent after its snapshot or
// replay, so a client sees every seq after the one it was given, in order, once.
//
// Event stream (GET /api/v1/events?topic=...): the same events as `id: SEQ`, `event: NAME`,
// `data: <the WebSocket event message>`; resumes after Last-Event-ID; a comment every
// heartbeat interval keeps proxies from closing it.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "api/http.h"
#include "api/push_hub.h"
#include "common/metrics.h"
#include "common/result.h"

namespace deeplens::api {

struct PushContext {
  PushHub& hub;
  Metrics& metrics;
  // An API key -> its tenant (in-band auth); an error as the REST API would answer it.
  std::function<Result<std::string>(const std::string& api_key)> authenticate;
  // The StatusChanged data (a JSON object) of an image of the tenant with the given transition;
  // NotFound when the tenant has no such image.
  std::function<Result<std::string>(const std::string& tenant_id, const std::string& image_id,
                                    const std::string& transition)>
      status_of;
  std::chrono::milliseconds auth_timeout{5000};
  std::chrono::milliseconds heartbeat{15000};  // event stream comments
  double messages_per_second = 50;             // client messages beyond this (burst: twice as many) get an error
};

// Whether topic is "tenant" or "image:<valid imageId>"; the image id (or "") in *image_id.
bool parse_push_topic(const std::string& topic, std::string* image_id);

class PushSession final : public StreamHandler, public PushListener, public std::enable_shared_from_this<PushSession> {
 public:
  enum class Transport { kWebSocket, kEventStream };

  // tenant_id empty: a WebSocket that must authenticate in-band. Otherwise the connection was
  // already counted against the tenant (PushHub::open_connection) and is released on close.
  static std::shared_ptr<PushSession> websocket(PushContext& ctx, std::string tenant_id);
  // One subscription to topic, resuming after since (Last-Event-ID) when given.
  static std::shared_ptr<PushSession> event_stream(PushContext& ctx, std::string tenant_id, std::string topic,
                                                   std::optional<uint64_t> since);

  void on_open(std::shared_ptr<StreamSink> sink) override;
  void on_message(std::string_view text) override;
  void on_close() override;
  void on_event(uint64_t subscription, const PushEventPtr& event) override;

  PushSession(PushContext& ctx, Transport transport, std::string tenant_id);
  ~PushSession() override;  // releases the tenant's connection if on_close never came (never opened)

 private:
  struct Sub {
    std::string topic;
    bool pending = true;                // being set up: events are held in `held`
    std::vector<PushEventPtr> held;
  };

  void subscribe(uint64_t id, const std::string& topic, std::optional<uint64_t> since);
  void unsubscribe(uint64_t id);
  void authenticate(const std::string& key);
  void send_error(std::optional<uint64_t> id, const std::string& code, const std::string& message);
  void send_locked(std::string data);  // mu_ held
  std::string event_out(const std::string& topic, const PushEvent& e) const;
  void close(uint16_t code, const std::string& reason);
  bool take_message_token();
  void heartbeat();

  PushContext& ctx_;
  const Transport transport_;
  std::string tenant_id_;  // on the strand; set once by in-band auth
  bool counted_ = false;   // holds one of the tenant's connections
  std::string stream_topic_;
  std::optional<uint64_t> stream_since_;
  double tokens_ = 0;
  std::chrono::steady_clock::time_point tokens_at_;

  std::mutex mu_;  // guards sink_ and subs_ (on_event comes from the feed thread)
  std::shared_ptr<StreamSink> sink_;
  std::map<uint64_t, Sub> subs_;
};

}  // namespace deeplens::api
