// QueryBatcher with a scripted extractor: concurrent single-image queries share calls, a call is
// never larger than the batch bound, a full queue refuses at once, and one image's failure is its
// own.
#include "features/query_batcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace deeplens {
namespace {

using namespace std::chrono_literals;

// Returns {width} for each image (so a result tells whose it is); each call takes `delay`, or
// waits for release() when gated. An image of width 0 fails its whole call.
class ScriptedExtractor final : public Extractor {
 public:
  explicit ScriptedExtractor(std::chrono::milliseconds delay, bool gated = false) : delay_(delay), gated_(gated) {
    info_.name = "scripted";
    info_.dimension = 1;
    info_.batches = true;
  }
  const ModelInfo& info() const override { return info_; }
  Result<std::vector<std::vector<float>>> extract(std::span<const ExtractorInput> batch) override {
    {
      std::unique_lock lock(mu_);
      sizes_.push_back(batch.size());
      ++in_call_;
      cv_.notify_all();
      if (gated_) cv_.wait(lock, [&] { return released_; });
    }
    std::this_thread::sleep_for(delay_);
    std::vector<std::vector<float>> out;
    for (const auto& in : batch) {
      if (in.pixels->width == 0) {
        std::lock_guard lock(mu_);
        --in_call_;
        return Error(ErrorCode::kInternal, "image 0 breaks the model");
      }
      out.push_back({static_cast<float>(in.pixels->width)});
    }
    std::lock_guard lock(mu_);
    --in_call_;
    return out;
  }
  void wait_in_call() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_call_ > 0; });
  }
  void release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  std::vector<size_t> sizes() {
    std::lock_guard lock(mu_);
    return sizes_;
  }

 private:
  ModelInfo info_;
  const std::chrono::milliseconds delay_;
  const bool gated_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<size_t> sizes_;
  int in_call_ = 0;
  bool released_ = false;
};

DecodedImage image_of(int width) {
  DecodedImage d;
  d.width = width;
  d.height = 1;
  return d;
}

TEST(QueryBatcher, ConcurrentQueriesShareCallsAndEachGetsItsOwnVector) {
  ScriptedExtractor model(30ms);
  QueryBatcher batcher(model, 16, 64);
  constexpr int kQueries = 16;
  std::vector<DecodedImage> images;
  for (int i = 1; i <= kQueries; ++i) images.push_back(image_of(i));
  std::vector<float> got(kQueries, -1);
  std::vector<std::thread> threads;
  for (int i = 0; i < kQueries; ++i)
    threads.emplace_back([&, i] {
      const ExtractorInput in{&images[i], {}, "q"};
      auto v = batcher.extract(in);
      if (v && v->size() == 1) got[i] = (*v)[0];
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < kQueries; ++i) EXPECT_EQ(got[i], static_cast<float>(i + 1)) << "query " << i;
  // The first query finds the model idle and runs alone; the rest arrive during its 30 ms call.
  EXPECT_LE(batcher.calls(), 4u) << "16 concurrent queries should share a few calls, not run one each";
  size_t total = 0;
  for (size_t s : model.sizes()) total += s;
  EXPECT_EQ(total, static_cast<size_t>(kQueries));
}

TEST(QueryBatcher, ALoneQueryRunsAtOnceAndNoCallExceedsTheBatchBound) {
  ScriptedExtractor model(5ms);
  QueryBatcher batcher(model, 4, 64);
  DecodedImage one = image_of(7);
  const auto t0 = std::chrono::steady_clock::now();
  auto v = batcher.extract(ExtractorInput{&one, {}, "q"});
  ASSERT_TRUE(v.ok());
  EXPECT_EQ((*v)[0], 7.0f);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  std::vector<DecodedImage> images(12, image_of(3));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (auto& img : images)
    threads.emplace_back([&] {
      if (auto r = batcher.extract(ExtractorInput{&img, {}, "q"}); r && (*r)[0] == 3.0f) ++ok;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 12);
  for (size_t s : model.sizes()) EXPECT_LE(s, 4u);
}

TEST(QueryBatcher, PastTheWaitingBoundAQueryIsRefusedAtOnceAsBusy) {
  ScriptedExtractor model(0ms, /*gated=*/true);
  QueryBatcher batcher(model, 8, 2);
  std::vector<DecodedImage> images(3, image_of(5));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  threads.emplace_back([&] { ok += batcher.extract(ExtractorInput{&images[0], {}, "q"}).ok(); });
  model.wait_in_call();  // the first query is on the model
  for (int i = 1; i <= 2; ++i) threads.emplace_back([&, i] { ok += batcher.extract(ExtractorInput{&images[i], {}, "q"}).ok(); });
  while (batcher.waiting() < 2) std::this_thread::sleep_for(1ms);
  DecodedImage extra = image_of(9);
  // Only a refusal can answer while the model is gated; give it 5 s, then release either way.
  std::optional<Result<std::vector<float>>> refused;
  std::atomic<bool> answered{false};
  std::thread extra_query([&] {
    refused = batcher.extract(ExtractorInput{&extra, {}, "q"});
    answered = true;
  });
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!answered && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  const bool answered_while_gated = answered;
  model.release();  // whatever happened, nothing stays blocked
  extra_query.join();
  for (auto& t : threads) t.join();
  ASSERT_TRUE(answered_while_gated) << "the extra query waited instead of being refused";
  ASSERT_FALSE(refused->ok()) << "a third waiter was queued past the bound of 2";
  EXPECT_EQ(refused->error().code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(refused->error().context.at("reason"), "busy");
  EXPECT_EQ(ok.load(), 3);
}

TEST(QueryBatcher, AFailedBatchIsRetriedOneImageAtATimeSoOnlyTheBadQueryFails) {
  ScriptedExtractor model(20ms);
  QueryBatcher batcher(model, 16, 64);
  std::vector<DecodedImage> images = {image_of(1), image_of(2), image_of(0), image_of(4), image_of(5)};
  std::vector<int> result(images.size(), -1);  // 1 ok, 0 failed
  std::vector<std::thread> threads;
  for (size_t i = 0; i < images.size(); ++i)
    threads.emplace_back([&, i] {
      auto r = batcher.extract(ExtractorInput{&images[i], {}, "q"});
      result[i] = r.ok() && (*r)[0] == static_cast<float>(images[i].width);
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(result, (std::vector<int>{1, 1, 0, 1, 1}));
}

}  // namespace
}  // namespace deeplens
