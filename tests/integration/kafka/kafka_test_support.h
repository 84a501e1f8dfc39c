// Shared by the Kafka integration tests: the options that make librdkafka fast against the
// in-process dev broker (librdkafka's mock cluster), and draining a consumer with a deadline.
//
// Test-only, header-only.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "bus/kafka/dev_broker.h"
#include "bus/kafka/kafka_bus.h"

namespace deeplens::testing {

// Client settings for the mock cluster (issue #6): an empty fetch waits the full
// fetch.wait.max.ms there, rebalances wait about session.timeout.ms.
inline KafkaBusOptions dev_bus_options(const std::string& bootstrap) {
  KafkaBusOptions o;
  o.bootstrap_servers = bootstrap;
  o.client_id = "deeplens-test";
  o.settings = {{"reconnect.backoff.max.ms", "1000"}};
  o.consumer_settings = {{"fetch.wait.max.ms", "5"},
                         {"session.timeout.ms", "6000"},
                         {"heartbeat.interval.ms", "1000"}};
  o.admin_timeout = std::chrono::milliseconds(1000);
  o.publish_timeout = std::chrono::milliseconds(5000);
  return o;
}

// Polls until `n` messages arrived in total or the deadline passed; commits nothing.
inline std::vector<BusMessage> drain(Consumer& c, size_t n, std::chrono::milliseconds deadline) {
  std::vector<BusMessage> out;
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (out.size() < n && std::chrono::steady_clock::now() < end) {
    auto batch = c.poll(std::chrono::milliseconds(100));
    if (!batch) continue;
    for (auto& m : *batch) out.push_back(std::move(m));
  }
  return out;
}

}  // namespace deeplens::testing
