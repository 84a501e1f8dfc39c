#include "features/query_batcher.h"

#include <algorithm>
#include <optional>
#include <span>
#include <string>

namespace deeplens {

struct QueryBatcher::Waiter {
  const ExtractorInput* input;
  std::optional<Result<std::vector<float>>> out;
};

QueryBatcher::QueryBatcher(Extractor& model, size_t max_batch, size_t max_waiting)
    : model_(model), max_batch_(std::max<size_t>(1, max_batch)), max_waiting_(max_waiting) {}

uint64_t QueryBatcher::calls() const {
  std::lock_guard lock(mu_);
  return calls_;
}

size_t QueryBatcher::waiting() const {
  std::lock_guard lock(mu_);
  return waiting_.size();
}

Result<std::vector<float>> QueryBatcher::extract(const ExtractorInput& input) {
  Waiter self{&input, std::nullopt};
  std::unique_lock lock(mu_);
  if (running_ && waiting_.size() >= max_waiting_)
    return Error(ErrorCode::kResourceExhausted, "too many searches by image are waiting for model '" +
                                                    model_.info().name + "'; retry shortly")
        .with("reason", "busy")
        .with("model", model_.info().name)
        .with("waiting", std::to_string(waiting_.size()));
  waiting_.push_back(&self);
  while (!self.out) {
    if (running_) {
      done_.wait(lock);
      continue;
    }
    // The model is idle: this thread runs the oldest waiters (itself among them unless more than
    // a batch waits before it; then it leads again until its own image is done).
    running_ = true;
    const size_t n = std::min(max_batch_, waiting_.size());
    std::vector<Waiter*> batch(waiting_.begin(), waiting_.begin() + static_cast<std::ptrdiff_t>(n));
    waiting_.erase(waiting_.begin(), waiting_.begin() + static_cast<std::ptrdiff_t>(n));
    lock.unlock();
    run(batch);
    lock.lock();
    running_ = false;
    done_.notify_all();
  }
  return std::move(*self.out);
}

// Outside mu_: one extract() of the batch; when it fails and holds several images, one each.
void QueryBatcher::run(std::vector<Waiter*>& batch) {
  std::vector<ExtractorInput> inputs;
  inputs.reserve(batch.size());
  for (const Waiter* w : batch) inputs.push_back(*w->input);
  auto call = [&](std::span<const ExtractorInput> in) {
    {
      std::lock_guard lock(mu_);
      ++calls_;
    }
    auto r = model_.extract(in);
    if (r && r->size() != in.size())
      return Result<std::vector<std::vector<float>>>(
          Error(ErrorCode::kInternal, "extractor returned " + std::to_string(r->size()) + " vectors for " +
                                          std::to_string(in.size()) + " images")
              .with("model", model_.info().name));
    return r;
  };
  auto all = call(inputs);
  if (all) {
    for (size_t i = 0; i < batch.size(); ++i) batch[i]->out = std::move((*all)[i]);
    return;
  }
  if (batch.size() == 1) {
    batch[0]->out = std::move(all).error();
    return;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    auto one = call(std::span(&inputs[i], 1));
    if (one) batch[i]->out = std::move((*one)[0]);
    else batch[i]->out = std::move(one).error();
  }
}

}  // namespace deeplens
