#include "pipeline/eta.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace deeplens {

double slots_until_taken(const std::array<int64_t, 3>& waiting, Priority lane, int64_t position,
                         const std::array<int, 3>& weights) {
  const size_t self = static_cast<size_t>(lane);
  // Remaining demand per lane: the other lanes' whole depth, our lane up to and including us.
  std::array<double, 3> left{};
  for (size_t i = 0; i < 3; ++i) left[i] = static_cast<double>(std::max<int64_t>(waiting[i], 0));
  left[self] = static_cast<double>(std::max<int64_t>(position, 0) + 1);
  double slots = 0;
  // Phases: while the set of busy lanes holds, each takes its weight's share; the phase ends when
  // the first of them runs dry. At most three phases.
  while (true) {
    double total_weight = 0;
    for (size_t i = 0; i < 3; ++i)
      if (left[i] > 0) total_weight += std::max(weights[i], 1);
    // Slots until lane i is dry at its share: left[i] * total / w[i].
    size_t first = self;
    double first_slots = left[self] * total_weight / std::max(weights[self], 1);
    for (size_t i = 0; i < 3; ++i) {
      if (i == self || left[i] <= 0) continue;
      const double s = left[i] * total_weight / std::max(weights[i], 1);
      if (s < first_slots) {
        first = i;
        first_slots = s;
      }
    }
    slots += first_slots;
    if (first == self) return slots;
    for (size_t i = 0; i < 3; ++i)
      if (left[i] > 0) left[i] -= first_slots * std::max(weights[i], 1) / total_weight;
    left[first] = 0;
  }
}

std::optional<double> observed_rate(const ExtractionBacklog& b, Timestamp now) {
  if (b.recent_completions < 2 || !b.first_completion) return std::nullopt;
  const double seconds = std::max<double>(static_cast<double>((now - *b.first_completion).count()) / 1000.0, 0.5);
  return static_cast<double>(b.recent_completions) / seconds;
}

int64_t estimate_waiting_ms(const EtaInputs& in) {
  const size_t lane = static_cast<size_t>(in.lane);
  const int models = std::max(in.models, 1);
  // Every model's request of this image waits in the lane; the last one taken finishes it.
  // Counted in requests (one per image and model), assuming the images around have as many models.
  std::array<int64_t, 3> requests{};
  for (size_t i = 0; i < 3; ++i) requests[i] = in.backlog.waiting[i] * models;
  const double slots = slots_until_taken(requests, in.lane, in.backlog.ahead[lane] * models + models - 1, in.weights);
  const double rate = observed_rate(in.backlog, in.now).value_or(1000.0 / std::max(in.extraction_ms, 1.0));
  const double wait_ms = slots / rate * 1000.0;
  return static_cast<int64_t>(std::llround(wait_ms + in.indexing_ms));
}

}  // namespace deeplens
