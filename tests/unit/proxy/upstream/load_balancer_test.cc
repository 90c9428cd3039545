#include "proxy/upstream/load_balancer.h"

#include <gtest/gtest.h>

#include <map>

#include "proxy/upstream/cluster_manager.h"

namespace culvert::upstream {
namespace {

std::vector<config::Endpoint> endpoints(std::vector<uint32_t> weights) {
  std::vector<config::Endpoint> out;
  for (size_t i = 0; i < weights.size(); ++i) {
    out.push_back({*common::SocketAddress::parse("10.0.0." + std::to_string(i + 1), 80), weights[i]});
  }
  return out;
}

TEST(RoundRobinTest, EqualWeightsRotate) {
  RoundRobinBalancer lb;
  auto eps = endpoints({1, 1, 1});
  std::vector<int> picks;
  for (int i = 0; i < 6; ++i) picks.push_back(lb.pick(eps));
  EXPECT_EQ(picks, (std::vector<int>{0, 1, 2, 0, 1, 2}));
}

TEST(RoundRobinTest, WeightsAreHonouredAndInterleaved) {
  RoundRobinBalancer lb;
  auto eps = endpoints({5, 1, 1});
  std::map<int, int> counts;
  std::vector<int> window;
  for (int i = 0; i < 7; ++i) {
    int p = lb.pick(eps);
    counts[p]++;
    window.push_back(p);
  }
  EXPECT_EQ(counts[0], 5);
  EXPECT_EQ(counts[1], 1);
  EXPECT_EQ(counts[2], 1);
  // Smooth: the light endpoints are spread through the window, not bunched at its end.
  EXPECT_EQ(window, (std::vector<int>{0, 0, 1, 0, 2, 0, 0}));
}

TEST(RoundRobinTest, EmptyHasNoPick) {
  RoundRobinBalancer lb;
  EXPECT_EQ(lb.pick({}), -1);
}

TEST(ClusterManagerTest, PicksFromNamedClusterAndReportsMissing) {
  auto table = std::make_shared<config::ClusterTable>();
  auto c = std::make_shared<config::Cluster>();
  c->name = "backend";
  c->endpoints = endpoints({1, 1});
  table->by_name["backend"] = c;
  auto empty = std::make_shared<config::Cluster>();
  empty->name = "empty";
  table->by_name["empty"] = empty;
  ClusterManager cm;
  cm.update(table);
  auto a = cm.pickEndpoint("backend");
  auto b = cm.pickEndpoint("backend");
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->endpoint.address.toString(), b->endpoint.address.toString());
  EXPECT_EQ(cm.pickEndpoint("nope").error(), ClusterManager::PickError::NoCluster);
  EXPECT_EQ(cm.pickEndpoint("empty").error(), ClusterManager::PickError::NoHealthyEndpoint);
}

}  // namespace
}  // namespace culvert::upstream
