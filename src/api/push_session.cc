#include "api/push_session.h"

#include <nlohmann/json.hpp>

#include "common/ids.h"
#include "common/log.h"

namespace deeplens::api {

using json = nlohmann::json;

bool parse_push_topic(const std::string& topic, std::string* image_id) {
  if (topic == "tenant") {
    if (image_id) image_id->clear();
    return true;
  }
  if (topic.rfind("image:", 0) != 0 || !is_image_id(std::string_view(topic).substr(6))) return false;
  if (image_id) *image_id = topic.substr(6);
  return true;
}

std::shared_ptr<PushSession> PushSession::websocket(PushContext& ctx, std::string tenant_id) {
  auto s = std::make_shared<PushSession>(ctx, Transport::kWebSocket, std::move(tenant_id));
  s->counted_ = !s->tenant_id_.empty();
  return s;
}

std::shared_ptr<PushSession> PushSession::event_stream(PushContext& ctx, std::string tenant_id, std::string topic,
                                                       std::optional<uint64_t> since) {
  auto s = std::make_shared<PushSession>(ctx, Transport::kEventStream, std::move(tenant_id));
  s->counted_ = true;
  s->stream_topic_ = std::move(topic);
  s->stream_since_ = since;
  return s;
}

PushSession::PushSession(PushContext& ctx, Transport transport, std::string tenant_id)
    : ctx_(ctx), transport_(transport), tenant_id_(std::move(tenant_id)) {
  tokens_ = 2 * ctx_.messages_per_second;
  tokens_at_ = std::chrono::steady_clock::now();
}

PushSession::~PushSession() {
  if (counted_) ctx_.hub.close_connection(tenant_id_);
}

void PushSession::on_open(std::shared_ptr<StreamSink> sink) {
  {
    std::lock_guard lock(mu_);
    sink_ = sink;
  }
  ctx_.metrics.add("deeplens_push_connections_total",
                   {{"transport", transport_ == Transport::kWebSocket ? "websocket" : "sse"}});
  if (transport_ == Transport::kEventStream) {
    {
      std::lock_guard lock(mu_);
      send_locked("retry: 3000\n\n");
    }
    subscribe(0, stream_topic_, stream_since_);
    sink->after(ctx_.heartbeat, [this] { heartbeat(); });
    return;
  }
  if (tenant_id_.empty()) {
    sink->after(ctx_.auth_timeout, [this] {
      if (tenant_id_.empty()) close(4401, "authentication timeout: send {\"type\":\"auth\",\"apiKey\":...} first");
    });
  }
}

void PushSession::heartbeat() {
  {
    std::lock_guard lock(mu_);
    if (!sink_) return;
    send_locked(": keep-alive\n\n");
    sink_->after(ctx_.heartbeat, [this] { heartbeat(); });
  }
}

void PushSession::on_close() {
  ctx_.hub.unsubscribe_all(this);  // after this, on_event is never called again
  if (counted_) ctx_.hub.close_connection(tenant_id_);
  counted_ = false;
  std::lock_guard lock(mu_);
  sink_.reset();
  subs_.clear();
}

void PushSession::close(uint16_t code, const std::string& reason) {
  std::lock_guard lock(mu_);
  if (sink_) sink_->close(code, reason);
}

void PushSession::send_locked(std::string data) {
  if (sink_ && !sink_->send(std::move(data))) ctx_.metrics.add("deeplens_push_dropped_total", {});
}

std::string PushSession::event_out(const std::string& topic, const PushEvent& e) const {
  const std::string& frame = e.frame_for(topic);
  if (transport_ == Transport::kWebSocket) return frame;
  return "id: " + std::to_string(e.seq) + "\nevent: " + e.name + "\ndata: " + frame + "\n\n";
}

void PushSession::send_error(std::optional<uint64_t> id, const std::string& code, const std::string& message) {
  nlohmann::ordered_json j;
  j["type"] = "error";
  if (id) j["id"] = *id;
  j["error"] = {{"code", code}, {"message", message}};
  std::lock_guard lock(mu_);
  if (transport_ == Transport::kWebSocket) send_locked(j.dump());
  else send_locked("event: error\ndata: " + j.dump() + "\n\n");
}

bool PushSession::take_message_token() {
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - tokens_at_).count();
  tokens_at_ = now;
  tokens_ = std::min(2 * ctx_.messages_per_second, tokens_ + elapsed * ctx_.messages_per_second);
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

void PushSession::on_message(std::string_view text) {
  if (transport_ != Transport::kWebSocket) return;
  if (!take_message_token()) {
    ctx_.metrics.add("deeplens_push_rejected_messages_total", {{"reason", "rate"}});
    return send_error(std::nullopt, "RATE_LIMITED",
                      "more than " + std::to_string(static_cast<int>(ctx_.messages_per_second)) +
                          " messages per second; this one was ignored");
  }
  json msg = json::parse(text, nullptr, false);
  if (msg.is_discarded() || !msg.is_object())
    return send_error(std::nullopt, "INVALID_MESSAGE", "a message must be a JSON object");
  std::optional<uint64_t> id;
  if (msg.contains("id")) {
    if (!msg["id"].is_number_unsigned())
      return send_error(std::nullopt, "INVALID_MESSAGE", "\"id\" must be a non-negative integer");
    id = msg["id"].get<uint64_t>();
  }
  const std::string type = msg.contains("type") && msg["type"].is_string() ? msg["type"].get<std::string>() : "";
  if (type == "ping") {
    std::lock_guard lock(mu_);
    return send_locked(R"({"type":"pong"})");
  }
  if (type == "auth") {
    if (!msg.contains("apiKey") || !msg["apiKey"].is_string())
      return send_error(id, "INVALID_MESSAGE", "auth needs \"apiKey\" (a string)");
    return authenticate(msg["apiKey"].get<std::string>());
  }
  if (type != "subscribe" && type != "unsubscribe")
    return send_error(id, "UNKNOWN_TYPE",
                      "unknown message type '" + type + "'; types are auth, subscribe, unsubscribe, ping");
  if (tenant_id_.empty())
    return send_error(id, "UNAUTHENTICATED", "authenticate first: {\"type\":\"auth\",\"apiKey\":...}");
  if (!id) return send_error(std::nullopt, "INVALID_MESSAGE", type + " needs \"id\" (a non-negative integer)");
  if (type == "unsubscribe") return unsubscribe(*id);
  if (!msg.contains("topic") || !msg["topic"].is_string())
    return send_error(id, "INVALID_MESSAGE", "subscribe needs \"topic\": \"tenant\" or \"image:<imageId>\"");
  std::optional<uint64_t> since;
  if (msg.contains("since") && !msg["since"].is_null()) {
    if (!msg["since"].is_number_unsigned())
      return send_error(id, "INVALID_MESSAGE", "\"since\" must be a non-negative integer (a seq)");
    since = msg["since"].get<uint64_t>();
  }
  subscribe(*id, msg["topic"].get<std::string>(), since);
}

void PushSession::authenticate(const std::string& key) {
  if (!tenant_id_.empty()) return send_error(std::nullopt, "ALREADY_AUTHENTICATED", "this connection is authenticated");
  auto tenant = ctx_.authenticate(key);
  if (!tenant) {
    ctx_.metrics.add("deeplens_push_rejected_messages_total", {{"reason", "auth"}});
    send_error(std::nullopt, "UNAUTHENTICATED", tenant.error().message);
    return close(4401, "invalid API key");
  }
  if (!ctx_.hub.open_connection(*tenant)) {
    send_error(std::nullopt, "TOO_MANY_CONNECTIONS",
               "the tenant has " + std::to_string(ctx_.hub.options().max_connections_per_tenant) +
                   " real-time connections open, the limit");
    return close(4429, "too many connections for this tenant");
  }
  tenant_id_ = *tenant;
  counted_ = true;
  nlohmann::ordered_json j{{"type", "authenticated"}, {"tenantId", tenant_id_}};
  std::lock_guard lock(mu_);
  send_locked(j.dump());
}

void PushSession::subscribe(uint64_t id, const std::string& topic, std::optional<uint64_t> since) {
  std::string image_id;
  if (!parse_push_topic(topic, &image_id))
    return send_error(id, "INVALID_TOPIC", "topic must be \"tenant\" or \"image:<imageId>\", got '" + topic + "'");
  {
    std::unique_lock lock(mu_);
    if (subs_.count(id)) {
      lock.unlock();
      return send_error(id, "DUPLICATE_ID", "subscription id " + std::to_string(id) + " is in use");
    }
    if (static_cast<int>(subs_.size()) >= ctx_.hub.options().max_subscriptions_per_connection) {
      lock.unlock();
      return send_error(id, "TOO_MANY_SUBSCRIPTIONS",
                        "at most " + std::to_string(ctx_.hub.options().max_subscriptions_per_connection) +
                            " subscriptions per connection");
    }
    subs_[id].topic = topic;
  }
  auto registered = ctx_.hub.subscribe(this, id, tenant_id_, topic, since);
  if (!registered) {
    {
      std::lock_guard lock(mu_);
      subs_.erase(id);
    }
    return send_error(id, "INVALID_REQUEST", registered.error().message);
  }
  // The snapshot is read after registering, so it is at least as new as the returned seq.
  std::optional<std::string> snapshot;
  if (!image_id.empty() && (!since || registered->reset)) {
    auto status = ctx_.status_of(tenant_id_, image_id, "snapshot");
    if (!status) {
      ctx_.hub.unsubscribe(this, id);
      {
        std::lock_guard lock(mu_);
        subs_.erase(id);
      }
      if (status.error().code == ErrorCode::kNotFound)
        return send_error(id, "NOT_FOUND", "no image '" + image_id + "' in this tenant");
      return send_error(id, "UNAVAILABLE", "cannot read the image's status: " + status.error().message);
    }
    snapshot = std::move(status).value();
  }
  std::lock_guard lock(mu_);
  auto it = subs_.find(id);
  if (it == subs_.end()) return;
  const uint64_t seq = registered->seq;
  if (transport_ == Transport::kWebSocket) {
    nlohmann::ordered_json j{{"type", "subscribed"}, {"id", id}, {"topic", topic}, {"seq", seq}};
    send_locked(j.dump());
  }
  if (registered->reset) {
    ctx_.metrics.add("deeplens_push_resets_total", {});
    nlohmann::ordered_json j{{"type", "reset"}, {"id", id}, {"topic", topic}, {"seq", seq}};
    if (transport_ == Transport::kWebSocket) send_locked(j.dump());
    else send_locked("event: reset\ndata: " + j.dump() + "\n\n");
  }
  for (const auto& e : registered->replay) send_locked(event_out(topic, *e));
  if (snapshot) {
    const std::string frame = push_event_frame(topic, seq, "StatusChanged", *snapshot);
    if (transport_ == Transport::kWebSocket) send_locked(frame);
    else send_locked("id: " + std::to_string(seq) + "\nevent: StatusChanged\ndata: " + frame + "\n\n");
  }
  for (const auto& e : it->second.held)
    if (e->seq > seq) send_locked(event_out(topic, *e));
  it->second.held.clear();
  it->second.pending = false;
}

void PushSession::unsubscribe(uint64_t id) {
  ctx_.hub.unsubscribe(this, id);
  std::lock_guard lock(mu_);
  if (!subs_.erase(id)) {
    nlohmann::ordered_json j{{"type", "error"}, {"id", id},
                             {"error", {{"code", "NOT_FOUND"}, {"message", "no subscription " + std::to_string(id)}}}};
    return send_locked(j.dump());
  }
  nlohmann::ordered_json j{{"type", "unsubscribed"}, {"id", id}};
  send_locked(j.dump());
}

void PushSession::on_event(uint64_t subscription, const PushEventPtr& event) {
  std::lock_guard lock(mu_);
  auto it = subs_.find(subscription);
  if (it == subs_.end()) return;
  if (it->second.pending) {
    it->second.held.push_back(event);
    return;
  }
  send_locked(event_out(it->second.topic, *event));
}

}  // namespace deeplens::api
