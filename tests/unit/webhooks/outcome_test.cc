#include <gtest/gtest.h>

#include "webhooks/dispatcher.h"

namespace deeplens::webhooks {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const Timestamp kNow = Timestamp(milliseconds(1'764'000'000'000));

DispatcherOptions options() {
  DispatcherOptions o;
  o.schedule = {seconds(5), seconds(300), seconds(1800)};
  o.jitter = 0.2;
  o.disable_after = std::chrono::hours(120);
  return o;
}

WireResult answered(int status) {
  WireResult w;
  w.http_status = status;
  return w;
}

TEST(WebhookOutcome, A2xxSucceedsAndClearsNothingElse) {
  for (int status : {200, 201, 202, 204, 299}) {
    auto o = decide_outcome(answered(status), 0, WebhookEndpoint{}, kNow, 12, options(), 0.5);
    EXPECT_EQ(o.status, DeliveryStatus::kSucceeded) << status;
    EXPECT_TRUE(o.attempt.error.empty());
    EXPECT_EQ(o.attempt.http_status, status);
    EXPECT_EQ(o.attempt.duration_ms, 12);
  }
}

TEST(WebhookOutcome, FailuresFollowTheScheduleWithJitterThenGiveUp) {
  const auto o = options();
  auto first = decide_outcome(answered(500), 0, WebhookEndpoint{}, kNow, 5, o, 0.5);  // jitter draw 0.5: x1.0
  ASSERT_EQ(first.status, DeliveryStatus::kPending);
  EXPECT_EQ(*first.next_attempt_at - kNow, milliseconds(5000));
  EXPECT_NE(first.attempt.error.find("500"), std::string::npos);
  auto low = decide_outcome(answered(500), 1, WebhookEndpoint{}, kNow, 5, o, 0.0);   // x0.8
  EXPECT_EQ(*low.next_attempt_at - kNow, milliseconds(240'000));
  auto high = decide_outcome(answered(500), 2, WebhookEndpoint{}, kNow, 5, o, 0.999999);  // just under x1.2
  EXPECT_GT(*high.next_attempt_at - kNow, milliseconds(2'159'000));
  EXPECT_LE(*high.next_attempt_at - kNow, milliseconds(2'160'000));
  auto last = decide_outcome(answered(500), 3, WebhookEndpoint{}, kNow, 5, o, 0.5);  // the schedule is spent
  EXPECT_EQ(last.status, DeliveryStatus::kFailed);
  EXPECT_FALSE(last.next_attempt_at.has_value());
}

TEST(WebhookOutcome, NetworkErrorsAndRedirectsAreRetriedToo) {
  WireResult refused;
  refused.error = "Connection refused";
  auto o = decide_outcome(refused, 0, WebhookEndpoint{}, kNow, 1, options(), 0.5);
  EXPECT_EQ(o.status, DeliveryStatus::kPending);
  EXPECT_EQ(o.attempt.error, "Connection refused");
  EXPECT_EQ(o.attempt.http_status, 0);
  EXPECT_EQ(decide_outcome(answered(302), 0, WebhookEndpoint{}, kNow, 1, options(), 0.5).status, DeliveryStatus::kPending);
}

TEST(WebhookOutcome, GoneDisablesTheEndpointAndFailsTheDelivery) {
  auto o = decide_outcome(answered(410), 0, WebhookEndpoint{}, kNow, 1, options(), 0.5);
  EXPECT_EQ(o.status, DeliveryStatus::kFailed);
  EXPECT_NE(o.disable_endpoint.find("410"), std::string::npos);
}

TEST(WebhookOutcome, RetryAfterIsHonouredOn429And503WithinTheLongestWait) {
  WireResult busy = answered(429);
  busy.retry_after = seconds(42);
  EXPECT_EQ(*decide_outcome(busy, 0, WebhookEndpoint{}, kNow, 1, options(), 0.5).next_attempt_at - kNow, seconds(42));
  busy.http_status = 503;
  busy.retry_after = std::chrono::hours(48);
  EXPECT_EQ(*decide_outcome(busy, 0, WebhookEndpoint{}, kNow, 1, options(), 0.5).next_attempt_at - kNow, seconds(1800));
  busy.http_status = 500;  // not a status that carries Retry-After: the schedule
  busy.retry_after = seconds(42);
  EXPECT_EQ(*decide_outcome(busy, 0, WebhookEndpoint{}, kNow, 1, options(), 0.5).next_attempt_at - kNow, seconds(5));
}

TEST(WebhookOutcome, AnEndpointFailingLongerThanTheLimitIsDisabled) {
  WebhookEndpoint e;
  e.failing_since = kNow - std::chrono::hours(119);
  EXPECT_TRUE(decide_outcome(answered(500), 0, e, kNow, 1, options(), 0.5).disable_endpoint.empty());
  e.failing_since = kNow - std::chrono::hours(121);
  auto o = decide_outcome(answered(500), 0, e, kNow, 1, options(), 0.5);
  EXPECT_NE(o.disable_endpoint.find("failing continuously since"), std::string::npos);
  EXPECT_EQ(o.status, DeliveryStatus::kPending);  // kept: it goes out if the endpoint is enabled again
}

TEST(WebhookRetryAfter, SecondsAndHttpDatesParse) {
  EXPECT_EQ(parse_retry_after("120", kNow), seconds(120));
  EXPECT_EQ(parse_retry_after(" 0 ", kNow), seconds(0));
  const Timestamp at = Timestamp(seconds(784111777));  // Sun, 06 Nov 1994 08:49:37 GMT
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", at), seconds(60));
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:48:37 GMT", at), milliseconds(0));  // past: now
  EXPECT_FALSE(parse_retry_after("soon", kNow).has_value());
  EXPECT_FALSE(parse_retry_after("", kNow).has_value());
}

}  // namespace
}  // namespace deeplens::webhooks
