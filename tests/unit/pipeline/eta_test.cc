// The lane time estimate (pipeline/eta.h) against a slot-by-slot run of the scheduler itself.
#include "pipeline/eta.h"

#include <gtest/gtest.h>

#include "pipeline/lane_scheduler.h"

namespace deeplens {
namespace {

// Slots until the message at `position` of `lane` is taken, by running LaneScheduler.
int64_t simulated_slots(const std::array<int64_t, 3>& waiting, Priority lane, int64_t position,
                        const std::array<int, 3>& w) {
  LaneScheduler s({{"high", "h", w[0]}, {"normal", "n", w[1]}, {"low", "l", w[2]}}, 1 << 30, 0);
  const char* topics[] = {"h", "n", "l"};
  for (size_t i = 0; i < 3; ++i) {
    std::vector<BusMessage> batch;
    for (int64_t k = 0; k < waiting[i]; ++k) {
      BusMessage m;
      m.topic = topics[i];
      m.offset = k;
      batch.push_back(m);
    }
    s.add(std::move(batch));
  }
  int64_t slots = 0;
  while (!s.empty()) {
    for (const auto& m : s.take(1)) {
      ++slots;
      if (m.topic == topics[static_cast<size_t>(lane)] && m.offset == position) return slots;
    }
  }
  return -1;
}

TEST(Eta, SlotsUntilTakenMatchesTheSchedulerWithinAFewSlots) {
  const std::array<int, 3> w{6, 3, 1};
  struct Case {
    std::array<int64_t, 3> waiting;
    Priority lane;
    int64_t position;
  };
  const Case cases[] = {
      {{0, 0, 500}, Priority::kLow, 499},   {{10, 0, 500}, Priority::kHigh, 9},
      {{10, 0, 500}, Priority::kLow, 100},  {{300, 200, 500}, Priority::kLow, 50},
      {{300, 200, 500}, Priority::kNormal, 150}, {{1000, 0, 20}, Priority::kLow, 19},
      {{5, 5, 5}, Priority::kNormal, 0},
  };
  for (const auto& c : cases) {
    const double model = slots_until_taken(c.waiting, c.lane, c.position, w);
    const int64_t real = simulated_slots(c.waiting, c.lane, c.position, w);
    EXPECT_NEAR(model, static_cast<double>(real), 10.0)
        << "waiting " << c.waiting[0] << "/" << c.waiting[1] << "/" << c.waiting[2] << " lane "
        << priority_name(c.lane) << " position " << c.position;
  }
}

TEST(Eta, TheObservedRateDrivesTheEstimate) {
  EtaInputs in;
  in.now = Timestamp(std::chrono::milliseconds(1'000'000));
  in.lane = Priority::kLow;
  in.backlog.waiting = {0, 0, 200};
  in.backlog.ahead = {0, 0, 99};
  in.backlog.recent_completions = 100;  // 100 in the last 10 s: 10 per second
  in.backlog.first_completion = in.now - std::chrono::seconds(10);
  in.extraction_ms = 1;  // would say 1000/s: must not be used while a rate was observed
  in.indexing_ms = 0;
  EXPECT_NEAR(static_cast<double>(estimate_waiting_ms(in)), 10'000.0, 1.0);  // 100 slots at 10/s

  in.backlog.recent_completions = 0;  // nothing observed: the mean duration stands in
  in.backlog.first_completion.reset();
  in.extraction_ms = 20;
  EXPECT_NEAR(static_cast<double>(estimate_waiting_ms(in)), 2'000.0, 1.0);
}

TEST(Eta, AHighImageBehindALowBacklogWaitsOnlyForTheHighLaneAndItsShare) {
  EtaInputs in;
  in.now = Timestamp(std::chrono::milliseconds(1'000'000));
  in.backlog.recent_completions = 50;
  in.backlog.first_completion = in.now - std::chrono::seconds(5);  // 10/s
  in.indexing_ms = 0;
  in.backlog.waiting = {10, 0, 500};
  in.lane = Priority::kHigh;
  in.backlog.ahead = {9, 0, 0};
  const int64_t high = estimate_waiting_ms(in);
  in.lane = Priority::kLow;
  in.backlog.ahead = {0, 0, 499};
  const int64_t low = estimate_waiting_ms(in);
  EXPECT_LT(high, 1'500);  // about 10 * 7/6 slots at 10/s
  EXPECT_GT(low, 50'000);  // the whole backlog
}

}  // namespace
}  // namespace deeplens
