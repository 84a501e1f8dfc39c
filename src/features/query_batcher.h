// QueryBatcher: single-image extractions from many threads (searches by image), run as shared
// extract() calls. A caller that finds the model idle runs its image at once; callers that arrive
// while a call runs wait and go together in the next one (at most max_batch images). So a query
// waits at most one call to join a batch, nothing waits when queries come one at a time, and 16
// concurrent queries cost a few forwards instead of 16 (worth it when ModelInfo::batches).
//
// Bounded: at most max_waiting queries wait (besides the batch running); one more fails at once
// with kResourceExhausted, context reason "busy" (the API answers 503 with Retry-After). A failed call of several images
// is retried one image at a time, so one query's failure is its own.
//
// Ownership: borrows the extractor, which must outlive the batcher.
// Thread-safety: extract() from any number of threads at once.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "common/result.h"
#include "features/extractor.h"

namespace deeplens {

class QueryBatcher {
 public:
  QueryBatcher(Extractor& model, size_t max_batch, size_t max_waiting);
  QueryBatcher(const QueryBatcher&) = delete;
  QueryBatcher& operator=(const QueryBatcher&) = delete;

  // The vector of one image (input.pixels as the model's info() asks), or the model's error.
  Result<std::vector<float>> extract(const ExtractorInput& input);

  const ModelInfo& info() const { return model_.info(); }
  // extract() calls made on the model so far (tests and metrics: fewer than queries = batching).
  uint64_t calls() const;
  // Queries waiting for the next call (not counting the call running).
  size_t waiting() const;

 private:
  struct Waiter;
  void run(std::vector<Waiter*>& batch);

  Extractor& model_;
  const size_t max_batch_;
  const size_t max_waiting_;
  mutable std::mutex mu_;
  std::condition_variable done_;
  std::deque<Waiter*> waiting_;  // guarded by mu_
  bool running_ = false;         // a call is on the model; guarded by mu_
  uint64_t calls_ = 0;           // guarded by mu_
};

}  // namespace deeplens
