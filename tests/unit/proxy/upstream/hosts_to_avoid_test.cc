// retry_host_predicate previous_hosts at the endpoint pick.
#include <gtest/gtest.h>

#include "proxy/upstream/cluster_manager.h"

namespace culvert::upstream {
namespace {

ClusterManager::PickContext avoiding(const std::vector<common::SocketAddress>& tried, uint32_t extra_picks) {
  ClusterManager::PickContext context;
  context.avoid = {&tried, extra_picks};
  return context;
}

std::shared_ptr<const config::ClusterTable> oneCluster(std::vector<std::pair<std::string, uint32_t>> endpoints) {
  auto cluster = std::make_shared<config::Cluster>();
  cluster->name = "c";
  for (const auto& [ip, weight] : endpoints) {
    cluster->endpoints.push_back({*common::SocketAddress::parse(ip, 80), weight});
  }
  auto table = std::make_shared<config::ClusterTable>();
  table->by_name["c"] = cluster;
  return table;
}

TEST(HostsToAvoidTest, RePicksPastTriedEndpoints) {
  ClusterManager clusters;
  clusters.update(oneCluster({{"10.0.0.1", 10}, {"10.0.0.2", 1}}));
  std::vector<common::SocketAddress> tried{*common::SocketAddress::parse("10.0.0.1", 80)};
  // Weighted 10:1, the balancer needs several picks to reach .2; 12 extra picks suffice.
  for (int i = 0; i < 5; ++i) {
    auto pick = clusters.pickEndpoint("c", avoiding(tried, 12));
    ASSERT_TRUE(pick);
    EXPECT_EQ(pick->endpoint.address.toString(), "10.0.0.2:80");
  }
}

TEST(HostsToAvoidTest, GivesUpAfterExtraPicksAndTakesTheLast) {
  ClusterManager clusters;
  clusters.update(oneCluster({{"10.0.0.1", 1}}));
  std::vector<common::SocketAddress> tried{*common::SocketAddress::parse("10.0.0.1", 80)};
  auto pick = clusters.pickEndpoint("c", avoiding(tried, 3));
  ASSERT_TRUE(pick);
  EXPECT_EQ(pick->endpoint.address.toString(), "10.0.0.1:80");
}

TEST(HostsToAvoidTest, NoAvoidanceByDefault) {
  ClusterManager clusters;
  clusters.update(oneCluster({{"10.0.0.1", 10}, {"10.0.0.2", 1}}));
  int first = 0;
  for (int i = 0; i < 11; ++i) first += clusters.pickEndpoint("c")->endpoint.address.toString() == "10.0.0.1:80";
  EXPECT_EQ(first, 10);
}

}  // namespace
}  // namespace culvert::upstream
