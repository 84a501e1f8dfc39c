// Time estimates for images in the priority lanes: the status API's estimatedTimeRemaining and
// the upload's estimatedProcessingTime.
//
// Both stages where images wait (orchestration and extraction) serve the lanes by the same
// weights (pipeline/lane_scheduler.h), so the pipeline behaves as one weighted queue whose rate is
// its slowest stage's. An image is done when the pipeline has finished what is ahead of it in its
// lane while the other lanes took their weighted shares:
//     slots until it is taken (a simulation of the weighted round-robin over the lanes' depths)
//   / the observed rate (indexing steps completed in the last 20 s, from the metadata store)
//   + the recent mean duration of its indexing step.
// "Ahead" is by upload time; a lane is FIFO per partition, so images near the head of a lane can
// be taken a little out of order. Arrivals after the estimate (a burst of high uploads in front of
// a low image) make it late; it is recomputed on every status read.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "common/clock.h"
#include "events/priority.h"
#include "store/metadata_store.h"

namespace deeplens {

// How many pipeline slots pass until the image at `position` (0 = head) of `lane` is taken,
// counting its own, when lane i holds waiting[i] images and takes weights[i] of every sum(weights)
// slots while it holds any.
double slots_until_taken(const std::array<int64_t, 3>& waiting, Priority lane, int64_t position,
                         const std::array<int, 3>& weights);

// Pipeline throughput (images/s) seen since `since`: completions over the time from the first
// of them to now; nullopt with fewer than two.
std::optional<double> observed_rate(const ExtractionBacklog& b, Timestamp now);

struct EtaInputs {
  ExtractionBacklog backlog;
  Priority lane = Priority::kNormal;
  std::array<int, 3> weights{6, 3, 1};
  Timestamp now;
  double extraction_ms = 100;  // recent mean extraction per image (the rate when none was observed)
  double indexing_ms = 10;     // recent mean per image
  int models = 1;
};

// Milliseconds until an image in the pipeline is completed.
int64_t estimate_waiting_ms(const EtaInputs& in);

}  // namespace deeplens
