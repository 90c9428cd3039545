#include "proxy/upstream/outlier_detector.h"

#include <gtest/gtest.h>

namespace culvert::upstream {
namespace {

using namespace std::chrono_literals;
using Clock = OutlierDetector::Clock;
using Kind = AttemptOutcome::Kind;

// Always 0: every enforcing_* percentage above 0 enforces.
Random zero() {
  return [] { return uint64_t{0}; };
}

config::OutlierDetection base() {
  config::OutlierDetection c;
  c.interval = 1000ms;
  c.base_ejection_time = 300ms;
  c.max_ejection_time = 1000ms;
  c.max_ejection_percent = 100;
  c.consecutive_5xx = 3;
  return c;
}

AttemptOutcome status(int s) { return {Kind::Response, s, 1000us}; }

TEST(OutlierDetectorTest, Consecutive5xxEjectsAndReturnsAfterBaseTime) {
  Clock::time_point t0{};
  OutlierDetector d(base(), 4, zero(), t0);
  EXPECT_FALSE(d.report(1, status(500), t0));
  EXPECT_FALSE(d.report(1, status(500), t0));
  EXPECT_FALSE(d.ejected(1));
  auto reason = d.report(1, status(500), t0 + 10ms);
  ASSERT_TRUE(reason);
  EXPECT_EQ(*reason, EjectionReason::Consecutive5xx);
  EXPECT_TRUE(d.ejected(1));
  EXPECT_EQ(d.ejectedCount(), 1u);
  bool changed = false;
  d.tick(t0 + 309ms, changed);
  EXPECT_FALSE(changed);
  EXPECT_TRUE(d.ejected(1));
  d.tick(t0 + 310ms, changed);
  EXPECT_TRUE(changed);
  EXPECT_FALSE(d.ejected(1));
}

TEST(OutlierDetectorTest, SuccessResetsTheConsecutiveCount) {
  Clock::time_point t0{};
  OutlierDetector d(base(), 2, zero(), t0);
  d.report(0, status(503), t0);
  d.report(0, status(503), t0);
  d.report(0, status(200), t0);
  d.report(0, status(503), t0);
  d.report(0, status(503), t0);
  EXPECT_FALSE(d.ejected(0));
  d.report(0, status(404), t0);  // 4xx is a success for outlier detection
  d.report(0, status(500), t0);
  EXPECT_FALSE(d.ejected(0));
}

TEST(OutlierDetectorTest, EjectionTimeGrowsWithEjectionsAndIsCapped) {
  Clock::time_point t0{};
  auto c = base();
  c.interval = 100s;  // no multiplier decay in this test
  OutlierDetector d(c, 2, zero(), t0);
  auto eject = [&](Clock::time_point at) {
    for (int i = 0; i < 3; ++i) d.report(0, status(500), at);
  };
  bool changed;
  eject(t0);
  d.tick(t0 + 300ms, changed);
  EXPECT_FALSE(d.ejected(0));
  eject(t0 + 400ms);  // second ejection: 600 ms
  d.tick(t0 + 999ms, changed);
  EXPECT_TRUE(d.ejected(0));
  d.tick(t0 + 1000ms, changed);
  EXPECT_FALSE(d.ejected(0));
  eject(t0 + 1100ms);  // 900 ms
  d.tick(t0 + 2000ms, changed);
  EXPECT_FALSE(d.ejected(0));
  eject(t0 + 2100ms);  // 1200 ms capped at max_ejection_time 1000 ms
  d.tick(t0 + 3099ms, changed);
  EXPECT_TRUE(d.ejected(0));
  d.tick(t0 + 3100ms, changed);
  EXPECT_FALSE(d.ejected(0));
  EXPECT_EQ(d.ejectionCount(0), 4u);
}

TEST(OutlierDetectorTest, MaxEjectionPercentLimitsEjections) {
  Clock::time_point t0{};
  auto c = base();
  c.max_ejection_percent = 50;
  OutlierDetector d(c, 4, zero(), t0);
  for (uint32_t h = 0; h < 4; ++h) {
    for (int i = 0; i < 3; ++i) d.report(h, status(500), t0);
  }
  EXPECT_EQ(d.ejectedCount(), 2u);
}

TEST(OutlierDetectorTest, EnforcingPercentageDrawsFromRandom) {
  Clock::time_point t0{};
  auto c = base();
  c.enforcing_consecutive_5xx = 30;
  uint64_t draw = 30;  // 30 % 100 >= 30: not enforced
  OutlierDetector d(c, 2, [&] { return draw; }, t0);
  for (int i = 0; i < 3; ++i) d.report(0, status(500), t0);
  EXPECT_FALSE(d.ejected(0));
  draw = 29;
  for (int i = 0; i < 3; ++i) d.report(0, status(500), t0);
  EXPECT_TRUE(d.ejected(0));
}

TEST(OutlierDetectorTest, GatewayFailuresNeedEnforcing) {
  Clock::time_point t0{};
  auto c = base();
  c.consecutive_5xx = 100;
  c.consecutive_gateway_failure = 2;
  OutlierDetector off(c, 2, zero(), t0);  // enforcing_consecutive_gateway_failure defaults to 0
  for (int i = 0; i < 4; ++i) off.report(0, status(502), t0);
  EXPECT_FALSE(off.ejected(0));
  c.enforcing_consecutive_gateway_failure = 100;
  OutlierDetector on(c, 2, zero(), t0);
  on.report(0, status(504), t0);
  on.report(0, status(500), t0);  // a non-gateway 5xx breaks the gateway run
  on.report(0, status(502), t0);
  EXPECT_FALSE(on.ejected(0));
  auto reason = on.report(0, status(503), t0);
  ASSERT_TRUE(reason);
  EXPECT_EQ(*reason, EjectionReason::ConsecutiveGatewayFailure);
}

TEST(OutlierDetectorTest, LocalOriginFailuresCountAs5xxUnlessSplit) {
  Clock::time_point t0{};
  OutlierDetector joined(base(), 2, zero(), t0);
  joined.report(0, {Kind::ConnectFailure}, t0);
  joined.report(0, {Kind::Reset}, t0);
  EXPECT_EQ(*joined.report(0, {Kind::Timeout}, t0), EjectionReason::Consecutive5xx);

  auto c = base();
  c.split_external_local_origin_errors = true;
  c.consecutive_local_origin_failure = 2;
  OutlierDetector split(c, 2, zero(), t0);
  split.report(0, status(500), t0);
  split.report(0, status(500), t0);
  split.report(0, {Kind::ConnectFailure}, t0);  // does not extend the 5xx run
  EXPECT_FALSE(split.ejected(0));
  EXPECT_EQ(*split.report(0, {Kind::Reset}, t0), EjectionReason::ConsecutiveLocalOriginFailure);
  // A response (the connection worked) resets the local-origin run.
  split.report(1, {Kind::ConnectFailure}, t0);
  split.report(1, status(500), t0);
  split.report(1, {Kind::ConnectFailure}, t0);
  EXPECT_FALSE(split.ejected(1));
}

TEST(OutlierDetectorTest, SuccessRateEjectsTheOutlierAtTheInterval) {
  Clock::time_point t0{};
  auto c = base();
  c.consecutive_5xx = 1000;
  c.success_rate_minimum_hosts = 5;
  c.success_rate_request_volume = 100;
  OutlierDetector d(c, 6, zero(), t0);
  for (uint32_t h = 0; h < 6; ++h) {
    for (int i = 0; i < 100; ++i) d.report(h, status(h == 4 && i % 2 ? 500 : 200), t0);
  }
  bool changed;
  auto made = d.tick(t0 + 999ms, changed);
  EXPECT_TRUE(made.empty());
  made = d.tick(t0 + 1000ms, changed);
  ASSERT_EQ(made.size(), 1u);
  EXPECT_EQ(made[0], EjectionReason::SuccessRate);
  EXPECT_TRUE(d.ejected(4));
  EXPECT_EQ(d.ejectedCount(), 1u);
}

TEST(OutlierDetectorTest, SuccessRateNeedsEnoughHosts) {
  Clock::time_point t0{};
  auto c = base();
  c.consecutive_5xx = 1000;
  OutlierDetector d(c, 4, zero(), t0);  // 4 < success_rate_minimum_hosts (5)
  for (uint32_t h = 0; h < 4; ++h) {
    for (int i = 0; i < 100; ++i) d.report(h, status(h == 0 ? 500 : 200), t0);
  }
  bool changed;
  EXPECT_TRUE(d.tick(t0 + 1000ms, changed).empty());
}

TEST(OutlierDetectorTest, FailurePercentage) {
  Clock::time_point t0{};
  auto c = base();
  c.consecutive_5xx = 1000;
  c.enforcing_failure_percentage = 100;
  c.failure_percentage_threshold = 50;
  c.failure_percentage_minimum_hosts = 2;
  c.failure_percentage_request_volume = 10;
  OutlierDetector d(c, 3, zero(), t0);
  for (int i = 0; i < 10; ++i) {
    d.report(0, status(200), t0);
    d.report(1, status(i < 5 ? 503 : 200), t0);  // exactly 50%
    d.report(2, status(i < 4 ? 503 : 200), t0);  // 40%
  }
  bool changed;
  auto made = d.tick(t0 + 1000ms, changed);
  ASSERT_EQ(made.size(), 1u);
  EXPECT_EQ(made[0], EjectionReason::FailurePercentage);
  EXPECT_TRUE(d.ejected(1));
  EXPECT_FALSE(d.ejected(2));
}

TEST(OutlierDetectorTest, LatencyEjectionAgainstTheMedian) {
  Clock::time_point t0{};
  auto c = base();
  c.latency_ejection_multiple = 3;
  c.latency_ejection_minimum_hosts = 3;
  c.latency_ejection_request_volume = 5;
  OutlierDetector d(c, 4, zero(), t0);
  for (int i = 0; i < 5; ++i) {
    d.report(0, {Kind::Response, 200, 1000us}, t0);
    d.report(1, {Kind::Response, 200, 1200us}, t0);
    d.report(2, {Kind::Response, 200, 2900us}, t0);   // under 3 × the median (2050 µs)
    d.report(3, {Kind::Response, 200, 10000us}, t0);  // slow
  }
  bool changed;
  auto made = d.tick(t0 + 1000ms, changed);
  ASSERT_EQ(made.size(), 1u);
  EXPECT_EQ(made[0], EjectionReason::Latency);
  EXPECT_TRUE(d.ejected(3));
  EXPECT_FALSE(d.ejected(2));
}

TEST(OutlierDetectorTest, AdoptHostKeepsAnEjection) {
  Clock::time_point t0{};
  OutlierDetector old(base(), 3, zero(), t0);
  for (int i = 0; i < 3; ++i) old.report(2, status(500), t0);
  OutlierDetector next(base(), 2, zero(), t0);
  next.adoptHost(0, old, 2);
  EXPECT_TRUE(next.ejected(0));
  EXPECT_EQ(next.ejectedCount(), 1u);
  bool changed;
  next.tick(t0 + 300ms, changed);
  EXPECT_FALSE(next.ejected(0));
}

}  // namespace
}  // namespace culvert::upstream
