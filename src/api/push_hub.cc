#include "api/push_hub.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace deeplens::api {

std::string push_event_frame(const std::string& topic, uint64_t seq, const std::string& name, const std::string& data) {
  // data is already JSON: splice it in rather than parse and re-serialise it.
  std::string out = R"({"type":"event","topic":)";
  out += nlohmann::json(topic).dump();
  out += R"(,"seq":)";
  out += std::to_string(seq);
  out += R"(,"event":)";
  out += nlohmann::json(name).dump();
  out += R"(,"data":)";
  out += data;
  out += '}';
  return out;
}

PushHub::PushHub(PushHubOptions options, const Clock& clock)
    : options_(std::move(options)),
      clock_(clock),
      base_(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(clock.now().time_since_epoch()).count())) {}

PushHub::TenantStream& PushHub::stream(const std::string& tenant_id) {
  auto [it, inserted] = tenants_.try_emplace(tenant_id);
  if (inserted) it->second.seq = it->second.floor = base_;
  return it->second;
}

void PushHub::trim(TenantStream& s, Timestamp now) {
  while (!s.history.empty() &&
         (s.history.size() > options_.history_events || s.history.front()->at < now - options_.history_age)) {
    s.floor = s.history.front()->seq;
    s.history.pop_front();
  }
}

uint64_t PushHub::publish(const std::string& tenant_id, const std::string& image_id, const std::string& name,
                          const std::string& data) {
  const Timestamp now = clock_.now();
  std::lock_guard lock(mu_);
  TenantStream& s = stream(tenant_id);
  auto e = std::make_shared<PushEvent>();
  e->seq = ++s.seq;
  e->tenant_id = tenant_id;
  e->image_id = image_id;
  e->name = name;
  e->data = data;
  e->at = now;
  const std::string image_topic = "image:" + image_id;
  e->tenant_frame = push_event_frame("tenant", e->seq, name, data);
  e->image_frame = push_event_frame(image_topic, e->seq, name, data);
  PushEventPtr event = std::move(e);
  s.history.push_back(event);
  trim(s, now);
  if (auto it = s.subscribers.find("tenant"); it != s.subscribers.end())
    for (const auto& sub : it->second) sub.listener->on_event(sub.subscription, event);
  if (auto it = s.subscribers.find(image_topic); it != s.subscribers.end())
    for (const auto& sub : it->second) sub.listener->on_event(sub.subscription, event);
  return event->seq;
}

Result<PushSubscribed> PushHub::subscribe(PushListener* listener, uint64_t subscription, const std::string& tenant_id,
                                          const std::string& topic, std::optional<uint64_t> since) {
  const bool image = topic.rfind("image:", 0) == 0 && topic.size() > 6;
  if (topic != "tenant" && !image)
    return Error(ErrorCode::kInvalidArgument, "topic must be \"tenant\" or \"image:<imageId>\"").with("topic", topic);
  const std::string image_id = image ? topic.substr(6) : std::string();
  std::lock_guard lock(mu_);
  if (index_.count({listener, subscription}))
    return Error(ErrorCode::kFailedPrecondition, "subscription id " + std::to_string(subscription) + " is in use")
        .with("id", std::to_string(subscription));
  TenantStream& s = stream(tenant_id);
  trim(s, clock_.now());
  PushSubscribed out;
  out.seq = s.seq;
  if (since) {
    if (*since < s.floor || *since > s.seq) {
      out.reset = true;
    } else {
      // History is in seq order: start after `since`.
      auto from = std::upper_bound(s.history.begin(), s.history.end(), *since,
                                   [](uint64_t v, const PushEventPtr& e) { return v < e->seq; });
      for (auto it = from; it != s.history.end(); ++it)
        if (!image || (*it)->image_id == image_id) out.replay.push_back(*it);
    }
  }
  s.subscribers[topic].push_back(Subscriber{listener, subscription});
  index_[{listener, subscription}] = {tenant_id, topic};
  return out;
}

void PushHub::unsubscribe(PushListener* listener, uint64_t subscription) {
  std::lock_guard lock(mu_);
  auto it = index_.find({listener, subscription});
  if (it == index_.end()) return;
  auto t = tenants_.find(it->second.first);
  if (t != tenants_.end()) {
    auto subs = t->second.subscribers.find(it->second.second);
    if (subs != t->second.subscribers.end()) {
      std::erase_if(subs->second, [&](const Subscriber& s) { return s.listener == listener && s.subscription == subscription; });
      if (subs->second.empty()) t->second.subscribers.erase(subs);
    }
  }
  index_.erase(it);
}

void PushHub::unsubscribe_all(PushListener* listener) {
  std::vector<uint64_t> ids;
  {
    std::lock_guard lock(mu_);
    for (auto it = index_.lower_bound({listener, 0}); it != index_.end() && it->first.first == listener; ++it)
      ids.push_back(it->first.second);
  }
  for (uint64_t id : ids) unsubscribe(listener, id);
}

bool PushHub::open_connection(const std::string& tenant_id) {
  std::lock_guard lock(mu_);
  TenantStream& s = stream(tenant_id);
  if (s.connections >= options_.max_connections_per_tenant) return false;
  ++s.connections;
  return true;
}

void PushHub::close_connection(const std::string& tenant_id) {
  std::lock_guard lock(mu_);
  auto it = tenants_.find(tenant_id);
  if (it != tenants_.end() && it->second.connections > 0) --it->second.connections;
}

size_t PushHub::subscriptions() const {
  std::lock_guard lock(mu_);
  return index_.size();
}

size_t PushHub::connections() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [_, s] : tenants_) n += static_cast<size_t>(s.connections);
  return n;
}

size_t PushHub::history_size() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [_, s] : tenants_) n += s.history.size();
  return n;
}

}  // namespace deeplens::api
