#include "proxy/upstream/locality_load.h"

#include <gtest/gtest.h>

#include <map>

namespace culvert::upstream {
namespace {

std::map<uint32_t, int> countPicks(LocalityScheduler& scheduler, int picks) {
  std::map<uint32_t, int> out;
  for (int i = 0; i < picks; ++i) {
    auto locality = scheduler.pick();
    if (locality) ++out[*locality];
  }
  return out;
}

TEST(LocalityLoadTest, EffectiveWeightFollowsEnvoysTable) {
  // Envoy's example: X weight 1, Y weight 2 (fully available); X's share of traffic as
  // its hosts fail, against the documented table (whole percents, so within 1).
  auto shareOfX = [](uint32_t healthy_of_100) {
    double x = effectiveLocalityWeight({1, 100, healthy_of_100});
    double y = effectiveLocalityWeight({2, 100, 100});
    return 100 * x / (x + y);
  };
  EXPECT_NEAR(shareOfX(100), 33, 1);
  EXPECT_NEAR(shareOfX(70), 33, 1);
  EXPECT_NEAR(shareOfX(69), 32, 1);
  EXPECT_NEAR(shareOfX(50), 26, 1);
  EXPECT_NEAR(shareOfX(25), 15, 1);
  EXPECT_EQ(shareOfX(0), 0);
  // The cap: from 72% healthy on, 140% × healthy share is past 1 and the weight is whole.
  EXPECT_DOUBLE_EQ(effectiveLocalityWeight({1, 100, 72}), 1);
  EXPECT_DOUBLE_EQ(effectiveLocalityWeight({1, 100, 50}), 0.7);
}

TEST(LocalityLoadTest, NoWeightOrNoHostsMeansNoLoad) {
  EXPECT_EQ(effectiveLocalityWeight({0, 4, 4}), 0);
  EXPECT_EQ(effectiveLocalityWeight({5, 0, 0}), 0);
  EXPECT_DOUBLE_EQ(effectiveLocalityWeight({5, 4, 4}), 5);
  // Overprovisioning 100: availability is the plain healthy share.
  EXPECT_DOUBLE_EQ(effectiveLocalityWeight({4, 4, 3}, 100), 3);
}

TEST(LocalityLoadTest, PicksInProportionToWeightInterleaved) {
  std::vector<LocalityHealth> localities = {{3, 2, 2}, {1, 2, 2}};
  LocalityScheduler scheduler(localities, {0, 1});
  // Smooth: every window of 4 picks holds exactly 3 of locality 0 and 1 of locality 1.
  for (int window = 0; window < 5; ++window) {
    auto counts = countPicks(scheduler, 4);
    EXPECT_EQ(counts[0], 3);
    EXPECT_EQ(counts[1], 1);
  }
}

TEST(LocalityLoadTest, UnhealthyHostsLowerALocalitysShare) {
  // Locality 0: weight 3, one of two healthy → 3 × min(1, 1.4 × 0.5) = 2.1; locality 1: 1.
  std::vector<LocalityHealth> localities = {{3, 2, 1}, {1, 2, 2}};
  LocalityScheduler scheduler(localities, {0, 1});
  auto counts = countPicks(scheduler, 3100);
  EXPECT_EQ(counts[0], 2100);
  EXPECT_EQ(counts[1], 1000);
  // None healthy: all to locality 1.
  localities[0].healthy = 0;
  LocalityScheduler down(localities, {0, 1});
  EXPECT_EQ(countPicks(down, 100)[1], 100);
}

TEST(LocalityLoadTest, OnlyMembersOfTheLevelAndOnlyWeightedLocalitiesArePicked) {
  std::vector<LocalityHealth> localities = {{1, 1, 1}, {0, 5, 5}, {2, 1, 1}, {7, 1, 1}};
  LocalityScheduler scheduler(localities, {0, 1, 2});  // 3 belongs to another priority
  auto counts = countPicks(scheduler, 300);
  EXPECT_EQ(counts[0], 100);
  EXPECT_EQ(counts[1], 0);  // no weight: no load
  EXPECT_EQ(counts[2], 200);
  EXPECT_EQ(counts[3], 0);
}

TEST(LocalityLoadTest, NothingToPickWhenNoLocalityHasEffectiveWeight) {
  EXPECT_FALSE(LocalityScheduler().pick());
  std::vector<LocalityHealth> localities = {{0, 2, 2}, {3, 2, 0}};
  LocalityScheduler scheduler(localities, {0, 1});
  EXPECT_FALSE(scheduler.pick());
}

}  // namespace
}  // namespace culvert::upstream
