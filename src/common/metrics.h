// Metrics: counters, gauges and histograms with labels, rendered in the Prometheus text format
// (served by the API at /metrics). Components receive a Metrics& at construction; no globals.
//
// Thread-safe; counters and histograms are updated under a short mutex (off the hot path's
// critical sections: one lock per event, not per byte).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace deeplens {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class Metrics {
 public:
  void describe(const std::string& name, const std::string& type, const std::string& help);
  void add(const std::string& name, const MetricLabels& labels, double value = 1);
  void set(const std::string& name, const MetricLabels& labels, double value);
  // Records an observation (seconds) into a histogram with the default latency buckets.
  void observe(const std::string& name, const MetricLabels& labels, double seconds);
  // Called at render time to refresh gauges that are cheaper to compute on demand.
  void add_collector(std::function<void(Metrics&)> collector);

  std::string render();
  double value(const std::string& name, const MetricLabels& labels) const;

 private:
  struct Histogram {
    std::vector<uint64_t> buckets;
    uint64_t count = 0;
    double sum = 0;
  };
  static std::string key(const std::string& name, const MetricLabels& labels);

  mutable std::mutex mu_;
  std::map<std::string, std::pair<std::string, std::string>> meta_;  // name -> (type, help)
  std::map<std::string, std::map<std::string, double>> values_;      // name -> labels -> value
  std::map<std::string, std::map<std::string, Histogram>> histograms_;
  std::vector<std::function<void(Metrics&)>> collectors_;
};

}  // namespace deeplens
