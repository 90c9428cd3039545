// What one endpoint pick costs a worker, by policy and cluster size: the per-request
// share of load balancing, which must not grow with the number of endpoints.
//   build/tests/bench/upstream_pick_bench
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "proxy/upstream/cluster_manager.h"
#include "proxy/upstream/load_balancer.h"

namespace {

using culvert::config::LbPolicy;

constexpr LbPolicy kPolicies[] = {LbPolicy::RoundRobin, LbPolicy::LeastRequest, LbPolicy::Maglev};

// Picks from one cluster of `endpoints` endpoints (weight 1, or 1..4 when `weighted`)
// through a ClusterManager, as a worker does per request.
void pickFromCluster(benchmark::State& state, LbPolicy policy, int64_t endpoints, bool weighted) {
  auto cluster = std::make_shared<culvert::config::Cluster>();
  cluster->name = "big";
  cluster->lb_policy = policy;
  for (int64_t i = 0; i < endpoints; ++i) {
    auto ip = "10." + std::to_string(i / 62500) + "." + std::to_string(i / 250 % 250) + "." + std::to_string(i % 250 + 1);
    auto weight = weighted ? static_cast<uint32_t>(i % 4 + 1) : 1u;
    cluster->endpoints.push_back({*culvert::common::SocketAddress::parse(ip, 8080), weight, 0});
  }
  auto table = std::make_shared<culvert::config::ClusterTable>();
  table->by_name["big"] = cluster;
  culvert::upstream::ClusterManager clusters;
  clusters.update(table);
  for (auto _ : state) {
    auto picked = clusters.pickEndpoint("big");
    if (!picked) return state.SkipWithError("no endpoint");
    benchmark::DoNotOptimize(picked);
  }
}

void BM_PickEndpoint(benchmark::State& state) {
  pickFromCluster(state, kPolicies[state.range(0)], state.range(1), false);
}
// policy: 0 ROUND_ROBIN, 1 LEAST_REQUEST, 2 MAGLEV; endpoints: 10 and 10,000 (equal weights).
BENCHMARK(BM_PickEndpoint)->ArgNames({"policy", "endpoints"})->ArgsProduct({{0, 1, 2}, {10, 10000}});

// ROUND_ROBIN with unequal endpoint weights (1..4): earliest deadline first, O(log hosts).
void BM_PickEndpointWeightedRoundRobin(benchmark::State& state) {
  pickFromCluster(state, LbPolicy::RoundRobin, state.range(0), true);
}
BENCHMARK(BM_PickEndpointWeightedRoundRobin)->ArgNames({"endpoints"})->Arg(10)->Arg(10000);

// A MAGLEV table build (Envoy's default 65537 slots) alone: what the first pick after an
// update costs a worker. Two host sets alternate, so every pick rebuilds. localities:1
// spreads the endpoints over 3 localities (weights 1, 2, 3) with locality weighting on,
// so the build also folds the locality weights into the hosts'.
void BM_MaglevBuild(benchmark::State& state) {
  std::vector<culvert::config::Endpoint> endpoints;
  std::vector<culvert::config::Locality> localities = {{1, 0, 0}, {2, 0, 0}, {3, 0, 0}};
  for (int64_t i = 0; i < 2 * state.range(0); ++i) {
    auto ip = "10." + std::to_string(i / 62500) + "." + std::to_string(i / 250 % 250) + "." + std::to_string(i % 250 + 1);
    const auto locality = static_cast<uint32_t>(i % 3);
    endpoints.push_back({*culvert::common::SocketAddress::parse(ip, 8080), 1, 0, locality});
    ++localities[locality].hosts;
  }
  std::vector<uint32_t> hosts[2];
  for (uint32_t i = 0; i < endpoints.size(); ++i) hosts[i % 2].push_back(i);
  culvert::upstream::MaglevBalancer lb(65537, culvert::upstream::defaultRandom());
  uint64_t version = 0;
  for (auto _ : state) {
    ++version;
    culvert::upstream::PickInput input{endpoints, hosts[version % 2], nullptr, version};
    input.hosts_version = version;
    if (state.range(1) != 0) input.localities = &localities;
    benchmark::DoNotOptimize(lb.pick(input));
  }
}
BENCHMARK(BM_MaglevBuild)
    ->ArgNames({"endpoints", "localities"})
    ->ArgsProduct({{100, 10000}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);

// Locality weighting's share: a ROUND_ROBIN cluster in 3 localities (weights 1, 2, 3),
// picked with and without common_lb_config.locality_weighted_lb_config.
void BM_PickEndpointLocalities(benchmark::State& state) {
  auto cluster = std::make_shared<culvert::config::Cluster>();
  cluster->name = "zoned";
  cluster->locality_weighted = state.range(0) != 0;
  const int64_t per_locality = state.range(1) / 3;
  for (uint32_t l = 0; l < 3; ++l) {
    cluster->localities.push_back({l + 1, 0, static_cast<uint32_t>(per_locality)});
    for (int64_t i = 0; i < per_locality; ++i) {
      auto ip = "10." + std::to_string(l) + "." + std::to_string(i / 250 % 250) + "." + std::to_string(i % 250 + 1);
      cluster->endpoints.push_back({*culvert::common::SocketAddress::parse(ip, 8080), 1, 0, l});
    }
  }
  auto table = std::make_shared<culvert::config::ClusterTable>();
  table->by_name["zoned"] = cluster;
  culvert::upstream::ClusterManager clusters;
  clusters.update(table);
  for (auto _ : state) {
    auto picked = clusters.pickEndpoint("zoned");
    if (!picked) return state.SkipWithError("no endpoint");
    benchmark::DoNotOptimize(picked);
  }
}
// weighted: 0 off, 1 on; endpoints: 12 and 9,999 over the 3 localities.
BENCHMARK(BM_PickEndpointLocalities)->ArgNames({"weighted", "endpoints"})->ArgsProduct({{0, 1}, {12, 9999}});

}  // namespace

BENCHMARK_MAIN();
