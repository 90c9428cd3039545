#include "proxy/router/retry_state.h"

#include <gtest/gtest.h>

namespace culvert::router {
namespace {

using config::RetryPolicy;
using std::chrono::milliseconds;
using Verdict = RetryState::Verdict;

RetryPolicy policyOn(uint32_t retry_on, uint32_t num_retries = 1) {
  RetryPolicy p;
  p.retry_on = retry_on;
  p.num_retries = num_retries;
  return p;
}

http::HeaderMap headersOf(std::initializer_list<std::pair<std::string, std::string>> list) {
  http::HeaderMap h;
  for (const auto& [k, v] : list) h.add(k, v);
  return h;
}

const http::HeaderMap kNoHeaders;

TEST(RetriableResponseTest, FiveXxCoversEvery5xxOnly) {
  auto p = policyOn(RetryPolicy::k5xx);
  EXPECT_TRUE(isRetriableResponse(p, 500, kNoHeaders));
  EXPECT_TRUE(isRetriableResponse(p, 503, kNoHeaders));
  EXPECT_TRUE(isRetriableResponse(p, 599, kNoHeaders));
  EXPECT_FALSE(isRetriableResponse(p, 499, kNoHeaders));
  EXPECT_FALSE(isRetriableResponse(p, 200, kNoHeaders));
  EXPECT_FALSE(isRetriableResponse(p, 409, kNoHeaders));
}

TEST(RetriableResponseTest, GatewayErrorIs502To504) {
  auto p = policyOn(RetryPolicy::kGatewayError);
  EXPECT_FALSE(isRetriableResponse(p, 500, kNoHeaders));
  EXPECT_TRUE(isRetriableResponse(p, 502, kNoHeaders));
  EXPECT_TRUE(isRetriableResponse(p, 503, kNoHeaders));
  EXPECT_TRUE(isRetriableResponse(p, 504, kNoHeaders));
  EXPECT_FALSE(isRetriableResponse(p, 505, kNoHeaders));
}

TEST(RetriableResponseTest, Retriable4xxIsConflictOnly) {
  auto p = policyOn(RetryPolicy::kRetriable4xx);
  EXPECT_TRUE(isRetriableResponse(p, 409, kNoHeaders));
  EXPECT_FALSE(isRetriableResponse(p, 429, kNoHeaders));
  EXPECT_FALSE(isRetriableResponse(p, 503, kNoHeaders));
}

TEST(RetriableResponseTest, StatusCodesListNeedsTheCondition) {
  auto p = policyOn(RetryPolicy::kRetriableStatusCodes);
  p.retriable_status_codes = {429, 418};
  EXPECT_TRUE(isRetriableResponse(p, 429, kNoHeaders));
  EXPECT_TRUE(isRetriableResponse(p, 418, kNoHeaders));
  EXPECT_FALSE(isRetriableResponse(p, 503, kNoHeaders));
  p.retry_on = 0;
  EXPECT_FALSE(isRetriableResponse(p, 429, kNoHeaders));
}

TEST(RetriableResponseTest, RetriableHeadersAnyMatcher) {
  auto p = policyOn(RetryPolicy::kRetriableHeaders);
  config::HeaderMatcher exact;
  exact.name = "x-upstream-retry";
  exact.string_match.emplace();
  exact.string_match->value = "yes";
  config::HeaderMatcher present;
  present.name = "x-try-again";
  present.present_match = true;
  p.retriable_headers = {exact, present};
  EXPECT_TRUE(isRetriableResponse(p, 200, headersOf({{"x-upstream-retry", "yes"}})));
  EXPECT_FALSE(isRetriableResponse(p, 200, headersOf({{"x-upstream-retry", "no"}})));
  EXPECT_TRUE(isRetriableResponse(p, 404, headersOf({{"x-try-again", ""}})));
  EXPECT_FALSE(isRetriableResponse(p, 500, kNoHeaders));
}

TEST(RetriableResponseTest, GrpcStatusesEachNeedTheirOwnCondition) {
  struct Case {
    uint32_t bit;
    const char* code;
  } cases[] = {{RetryPolicy::kGrpcCancelled, "1"},
               {RetryPolicy::kGrpcDeadlineExceeded, "4"},
               {RetryPolicy::kGrpcResourceExhausted, "8"},
               {RetryPolicy::kGrpcInternal, "13"},
               {RetryPolicy::kGrpcUnavailable, "14"}};
  for (const auto& c : cases) {
    auto p = policyOn(c.bit);
    for (const auto& other : cases) {
      bool expected = other.bit == c.bit;
      EXPECT_EQ(isRetriableResponse(p, 200, headersOf({{"grpc-status", other.code}})), expected)
          << "condition " << c.code << " status " << other.code;
    }
    EXPECT_FALSE(isRetriableResponse(p, 200, headersOf({{"grpc-status", "0"}})));
    EXPECT_FALSE(isRetriableResponse(p, 200, headersOf({{"grpc-status", "14x"}})));
  }
}

TEST(RetriableFailureTest, EnvoysCoverage) {
  for (uint32_t broad : {RetryPolicy::k5xx, RetryPolicy::kGatewayError, RetryPolicy::kReset}) {
    auto p = policyOn(broad);
    for (auto f : {AttemptFailure::ConnectFailure, AttemptFailure::Reset, AttemptFailure::RefusedStream,
                   AttemptFailure::PerTryTimeout, AttemptFailure::PerTryIdleTimeout}) {
      EXPECT_TRUE(isRetriableFailure(p, f));
    }
  }
  auto connect = policyOn(RetryPolicy::kConnectFailure);
  EXPECT_TRUE(isRetriableFailure(connect, AttemptFailure::ConnectFailure));
  EXPECT_FALSE(isRetriableFailure(connect, AttemptFailure::Reset));
  EXPECT_FALSE(isRetriableFailure(connect, AttemptFailure::PerTryTimeout));
  auto refused = policyOn(RetryPolicy::kRefusedStream);
  EXPECT_TRUE(isRetriableFailure(refused, AttemptFailure::RefusedStream));
  EXPECT_FALSE(isRetriableFailure(refused, AttemptFailure::ConnectFailure));
  auto statuses = policyOn(RetryPolicy::kRetriableStatusCodes | RetryPolicy::kGrpcUnavailable);
  EXPECT_FALSE(isRetriableFailure(statuses, AttemptFailure::Reset));
}

TEST(JitteredBackOffTest, CeilingDoublesPlusOneTimesBaseUntilMax) {
  JitteredBackOff b(milliseconds(25), milliseconds(250));
  // The largest random value shows each ceiling: (2^k - 1) * 25 - 1, capped at 250.
  EXPECT_EQ(b.next(UINT64_MAX - (UINT64_MAX % 25) - 1).count(), 24);
  EXPECT_EQ(b.next(74).count(), 74);
  EXPECT_EQ(b.next(174).count(), 174);  // ceiling 175
  EXPECT_EQ(b.next(374).count(), 250);  // ceiling 375, capped
  EXPECT_EQ(b.next(1000).count(), 250);
}

TEST(JitteredBackOffTest, RandomZeroIsNoWait) {
  JitteredBackOff b(milliseconds(100), milliseconds(1000));
  EXPECT_EQ(b.next(0).count(), 0);
  EXPECT_EQ(b.next(99).count(), 99);
}

TEST(RateLimitedBackOffTest, SecondsAndTimestamps) {
  RetryPolicy p;
  p.reset_headers = {{"retry-after", RetryPolicy::ResetHeader::Format::Seconds},
                     {"x-ratelimit-reset", RetryPolicy::ResetHeader::Format::UnixTimestamp}};
  p.reset_max_interval = milliseconds(5000);
  auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000)) + milliseconds(250);
  EXPECT_EQ(rateLimitedBackOff(p, headersOf({{"retry-after", "2"}}), now), milliseconds(2000));
  EXPECT_EQ(rateLimitedBackOff(p, headersOf({{"x-ratelimit-reset", "1700000003"}}), now), milliseconds(2750));
  // Beyond max_interval: discarded, the next header is tried.
  EXPECT_EQ(rateLimitedBackOff(p, headersOf({{"retry-after", "6"}, {"x-ratelimit-reset", "1700000001"}}), now),
            milliseconds(750));
  EXPECT_EQ(rateLimitedBackOff(p, headersOf({{"retry-after", "6"}}), now), std::nullopt);
  EXPECT_EQ(rateLimitedBackOff(p, headersOf({{"retry-after", "0"}}), now), std::nullopt);
  EXPECT_EQ(rateLimitedBackOff(p, headersOf({{"retry-after", "soon"}}), now), std::nullopt);
  EXPECT_EQ(rateLimitedBackOff(p, headersOf({{"x-ratelimit-reset", "1699999999"}}), now), std::nullopt);
  EXPECT_EQ(rateLimitedBackOff(p, kNoHeaders, now), std::nullopt);
}

TEST(RetryResourcesTest, MaxRetriesAndBudget) {
  config::RetryLimits limits;  // max_retries 3
  EXPECT_TRUE(RetryResources::allows(limits, 100, 2));
  EXPECT_FALSE(RetryResources::allows(limits, 100, 3));
  limits.budget = config::RetryLimits::Budget{};  // 20 %, at least 3
  EXPECT_TRUE(RetryResources::allows(limits, 0, 2));
  EXPECT_FALSE(RetryResources::allows(limits, 10, 3));
  EXPECT_TRUE(RetryResources::allows(limits, 100, 19));
  EXPECT_FALSE(RetryResources::allows(limits, 100, 20));
}

TEST(RetryResourcesTest, SlotsAreTakenAndGivenBack) {
  config::RetryLimits limits;
  limits.max_retries = 1;
  RetryResources r;
  EXPECT_TRUE(r.tryStartRetry(limits));
  EXPECT_FALSE(r.tryStartRetry(limits));
  r.retryEnded();
  EXPECT_TRUE(r.tryStartRetry(limits));
}

class RetryStateTest : public ::testing::Test {
protected:
  std::unique_ptr<RetryState> make(const RetryPolicy& p, config::RetryLimits limits = {}) {
    return std::make_unique<RetryState>(
        p, limits, resources, [this] { return random_value; }, [this] { return wall; });
  }
  std::shared_ptr<RetryResources> resources = std::make_shared<RetryResources>();
  uint64_t random_value = 10;
  std::chrono::system_clock::time_point wall = std::chrono::system_clock::time_point(std::chrono::seconds(1000));
};

TEST_F(RetryStateTest, RetriesUpToNumRetriesThenLimitExceeded) {
  auto p = policyOn(RetryPolicy::k5xx, 2);
  auto s = make(p);
  auto d = s->onResponse(503, kNoHeaders);
  EXPECT_EQ(d.verdict, Verdict::Retry);
  EXPECT_EQ(d.back_off, milliseconds(10));  // 10 % 25
  d = s->onFailure(AttemptFailure::Reset);
  EXPECT_EQ(d.verdict, Verdict::Retry);
  EXPECT_EQ(s->onResponse(500, kNoHeaders).verdict, Verdict::LimitExceeded);
  EXPECT_EQ(s->retriesDone(), 2u);
}

TEST_F(RetryStateTest, NotRetriableLeavesTheCountAlone) {
  auto p = policyOn(RetryPolicy::kGatewayError, 3);
  auto s = make(p);
  EXPECT_EQ(s->onResponse(500, kNoHeaders).verdict, Verdict::NoRetry);
  EXPECT_EQ(s->onResponse(200, kNoHeaders).verdict, Verdict::NoRetry);
  EXPECT_EQ(s->retriesDone(), 0u);
}

TEST_F(RetryStateTest, OverflowWhenTheClusterHasNoRetrySlot) {
  auto p = policyOn(RetryPolicy::k5xx, 5);
  config::RetryLimits limits;
  limits.max_retries = 1;
  auto first = make(p, limits);
  auto second = make(p, limits);
  EXPECT_EQ(first->onResponse(503, kNoHeaders).verdict, Verdict::Retry);
  EXPECT_EQ(second->onResponse(503, kNoHeaders).verdict, Verdict::Overflow);
  first->attemptEnded();  // the retry's attempt finished: the slot is free again
  EXPECT_EQ(second->onResponse(503, kNoHeaders).verdict, Verdict::Retry);
  second.reset();  // a request that ends gives its slot back
  EXPECT_EQ(resources->activeRetries(), 0u);
}

TEST_F(RetryStateTest, DisabledWhenTheBodyOutgrewTheBuffer) {
  auto p = policyOn(RetryPolicy::k5xx, 2);
  auto s = make(p);
  s->disable();
  EXPECT_EQ(s->onResponse(503, kNoHeaders).verdict, Verdict::Disabled);
  EXPECT_EQ(s->onResponse(200, kNoHeaders).verdict, Verdict::NoRetry);
}

TEST_F(RetryStateTest, RetryAfterReplacesTheExponentialWait) {
  auto p = policyOn(RetryPolicy::kRetriableStatusCodes, 3);
  p.retriable_status_codes = {429};
  p.reset_headers = {{"retry-after", RetryPolicy::ResetHeader::Format::Seconds}};
  p.reset_max_interval = milliseconds(10000);
  auto s = make(p);
  auto d = s->onResponse(429, headersOf({{"retry-after", "3"}}));
  EXPECT_EQ(d.verdict, Verdict::Retry);
  EXPECT_EQ(d.back_off, milliseconds(3000));
  random_value = 60;
  d = s->onResponse(429, kNoHeaders);
  EXPECT_EQ(d.back_off, milliseconds(60));  // second ceiling 75: the exponential one advanced
}

TEST_F(RetryStateTest, TriedHostsAreKept) {
  auto p = policyOn(RetryPolicy::k5xx);
  p.previous_hosts = true;
  auto s = make(p);
  s->recordHost(*common::SocketAddress::parse("10.0.0.1", 80));
  s->recordHost(*common::SocketAddress::parse("10.0.0.2", 80));
  ASSERT_EQ(s->triedHosts().size(), 2u);
  EXPECT_TRUE(s->avoidsPreviousHosts());
}

// Envoy's router order for an attempt's outcome while hedging.
TEST(OutcomeActionTest, AScheduledRetryComesFirst) {
  EXPECT_EQ(outcomeAction({.retry_scheduled = true, .failed = true, .others_pending = true}), OutcomeAction::Retry);
  EXPECT_EQ(outcomeAction({.retry_scheduled = true, .retriable = true}), OutcomeAction::Retry);
}

TEST(OutcomeActionTest, AFailureYieldsToAttemptsStillOut) {
  EXPECT_EQ(outcomeAction({.failed = true, .others_pending = true}), OutcomeAction::Yield);
  // Alone, the request fails (503).
  EXPECT_EQ(outcomeAction({.failed = true}), OutcomeAction::Downstream);
}

TEST(OutcomeActionTest, ARetriableAnswerNotRetriedYieldsToAttemptsStillOut) {
  // A hedged attempt's 503, or one over num_retries, while the hedge is out.
  EXPECT_EQ(outcomeAction({.retriable = true, .others_pending = true}), OutcomeAction::Yield);
  // Alone, it goes downstream as it is.
  EXPECT_EQ(outcomeAction({.retriable = true}), OutcomeAction::Downstream);
}

TEST(OutcomeActionTest, AGoodAnswerGoesDownstreamWhateverIsOut) {
  EXPECT_EQ(outcomeAction({.others_pending = true}), OutcomeAction::Downstream);
  EXPECT_EQ(outcomeAction({}), OutcomeAction::Downstream);
}

}  // namespace
}  // namespace culvert::router
