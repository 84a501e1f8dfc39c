#include "bus/event_bus.h"

namespace deeplens {

PublishOutcome EventBus::publish_batch(std::span<const OutboxMessage> messages) {
  PublishOutcome out;
  for (const auto& m : messages) {
    out.status = publish(m);
    if (!out.status) break;
    ++out.delivered;
  }
  return out;
}

}  // namespace deeplens
