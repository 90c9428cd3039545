#include "proxy/upstream/priority_load.h"

#include <gtest/gtest.h>

namespace culvert::upstream {
namespace {

TEST(PriorityLoadTest, AllHealthyStaysOnPriorityZero) {
  auto load = computePriorityLoad({{4, 4}, {4, 4}}, 50);
  EXPECT_EQ(load.percent, (std::vector<uint32_t>{100, 0}));
  EXPECT_EQ(load.panic, (std::vector<bool>{false, false}));
}

TEST(PriorityLoadTest, OverprovisioningDelaysFailover) {
  // 3 of 4 healthy: 140 × 0.75 = 105 → still 100% on P0.
  EXPECT_EQ(computePriorityLoad({{4, 3}, {4, 4}}, 50).percent, (std::vector<uint32_t>{100, 0}));
  // 2 of 4: 70% on P0, the rest fails over to P1 (Envoy's example).
  EXPECT_EQ(computePriorityLoad({{4, 2}, {4, 4}}, 50).percent, (std::vector<uint32_t>{70, 30}));
  // None on P0: all on P1.
  EXPECT_EQ(computePriorityLoad({{4, 0}, {4, 4}}, 50).percent, (std::vector<uint32_t>{0, 100}));
}

TEST(PriorityLoadTest, NormalisedWhenTotalAvailabilityIsUnder100) {
  // P0 1/4 (35), P1 1/4 (35): total 70 → normalised 50/50, and both in panic? No: 25% < 50%.
  auto load = computePriorityLoad({{4, 1}, {4, 1}}, 50);
  EXPECT_EQ(load.percent, (std::vector<uint32_t>{50, 50}));
  EXPECT_EQ(load.panic, (std::vector<bool>{true, true}));
}

TEST(PriorityLoadTest, PanicThresholdPerLevel) {
  // One level, 1 of 4 healthy: 25% < 50% → panic (all endpoints are used).
  auto load = computePriorityLoad({{4, 1}}, 50);
  EXPECT_EQ(load.percent, (std::vector<uint32_t>{100}));
  EXPECT_TRUE(load.panic[0]);
  // 2 of 4: 50% is not below 50%.
  EXPECT_FALSE(computePriorityLoad({{4, 2}}, 50).panic[0]);
  // Threshold 0 disables panic, even with nothing healthy.
  auto none = computePriorityLoad({{4, 0}}, 0);
  EXPECT_FALSE(none.panic[0]);
  EXPECT_EQ(none.percent, (std::vector<uint32_t>{100}));
}

TEST(PriorityLoadTest, TotalPanicSplitsByEndpointCount) {
  auto load = computePriorityLoad({{1, 0}, {3, 0}}, 50);
  EXPECT_EQ(load.panic, (std::vector<bool>{true, true}));
  EXPECT_EQ(load.percent, (std::vector<uint32_t>{25, 75}));
}

TEST(PriorityLoadTest, ChoosePriorityFollowsPercentages) {
  std::vector<uint32_t> percent{70, 30};
  int p0 = 0;
  for (uint64_t draw = 0; draw < 1000; ++draw) p0 += choosePriority(percent, draw) == 0;
  EXPECT_EQ(p0, 700);
  EXPECT_EQ(choosePriority({0, 100}, 5), 1u);
}

}  // namespace
}  // namespace culvert::upstream
