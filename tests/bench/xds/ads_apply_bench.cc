// xDS apply cost. Main thread: from a DiscoveryResponse's bytes to the Snapshot that is
// published (decode + validate + translate + assemble). Worker: from that Snapshot to the
// first pick that uses it (the cluster manager's update, and for MAGLEV the lookup table
// a first pick builds). The post between them is not included (see docs/benchmarks.md).
//
//   build/tests/bench/xds_ads_apply_bench --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <string>

#include "proxy/common/stats.h"
#include "proxy/upstream/cluster_manager.h"
#include "xds/client/ads_state.h"
#include "xds/proto/envoy/config/cluster/v3/cluster.pb.h"
#include "xds/proto/envoy/config/endpoint/v3/endpoint.pb.h"
#include "xds/proto/envoy/service/discovery/v3/discovery.pb.h"

namespace {

using namespace culvert::xds::client;
namespace discovery = envoy::service::discovery::v3;

using LbPolicy = envoy::config::cluster::v3::Cluster::LbPolicy;
constexpr LbPolicy kPolicies[] = {envoy::config::cluster::v3::Cluster::ROUND_ROBIN,
                                  envoy::config::cluster::v3::Cluster::MAGLEV};

envoy::config::cluster::v3::Cluster edsCluster(const std::string& name, LbPolicy policy) {
  envoy::config::cluster::v3::Cluster c;
  c.set_name(name);
  c.set_type(envoy::config::cluster::v3::Cluster::EDS);
  c.set_lb_policy(policy);
  c.mutable_eds_cluster_config()->mutable_eds_config()->mutable_ads();
  return c;
}

envoy::config::endpoint::v3::ClusterLoadAssignment cla(const std::string& name, int n, int salt) {
  envoy::config::endpoint::v3::ClusterLoadAssignment a;
  a.set_cluster_name(name);
  auto* locality = a.add_endpoints();
  for (int i = 0; i < n; ++i) {
    auto* sa = locality->add_lb_endpoints()->mutable_endpoint()->mutable_address()->mutable_socket_address();
    sa->set_address("10." + std::to_string((i >> 16) & 255) + "." + std::to_string((i >> 8) & 255) + "." +
                    std::to_string(i & 255));
    sa->set_port_value(static_cast<uint32_t>(8080 + salt));
  }
  return a;
}

std::string bytesOf(const discovery::DiscoveryResponse& r) { return r.SerializeAsString(); }

// A state holding one EDS cluster "big" of the given policy, and two EDS updates for it,
// each replacing all 10,000 endpoints (the port differs).
struct EdsFixture {
  AdsState state;
  std::string updates[2];

  explicit EdsFixture(LbPolicy policy) {
    discovery::DiscoveryResponse cds;
    cds.set_type_url(std::string(typeUrl(ResourceType::Cluster)));
    cds.set_version_info("1");
    cds.add_resources()->PackFrom(edsCluster("big", policy));
    state.onResponse(cds, SystemTime{});
    discovery::DiscoveryResponse lds;
    lds.set_type_url(std::string(typeUrl(ResourceType::Listener)));
    state.onResponse(lds, SystemTime{});
    for (int salt = 0; salt < 2; ++salt) {
      discovery::DiscoveryResponse eds;
      eds.set_type_url(std::string(typeUrl(ResourceType::ClusterLoadAssignment)));
      eds.set_version_info(std::to_string(salt));
      eds.add_resources()->PackFrom(cla("big", 10000, salt));
      updates[salt] = bytesOf(eds);
    }
  }

  std::shared_ptr<const culvert::config::Snapshot> apply(const std::string& bytes) {
    discovery::DiscoveryResponse r;
    r.ParseFromString(bytes);
    if (!state.onResponse(r, SystemTime{}).accepted) return nullptr;
    return state.snapshot();
  }
};

// Main thread: an EDS update replacing 10,000 endpoints of one cluster.
void BM_Eds10kEndpoints(benchmark::State& state) {
  EdsFixture f(kPolicies[state.range(0)]);
  int i = 0;
  for (auto _ : state) {
    auto snap = f.apply(f.updates[i++ & 1]);
    if (!snap) state.SkipWithError("rejected");
    benchmark::DoNotOptimize(snap);
  }
}
BENCHMARK(BM_Eds10kEndpoints)->ArgName("maglev")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// One worker: the same update from the published Snapshot to the first pick that uses it,
// with per-cluster stats as culvertd has them.
void BM_Eds10kEndpointsWorker(benchmark::State& state) {
  EdsFixture f(kPolicies[state.range(0)]);
  std::shared_ptr<const culvert::config::Snapshot> snaps[2] = {f.apply(f.updates[0]), f.apply(f.updates[1])};
  if (!snaps[0] || !snaps[1]) return state.SkipWithError("rejected");
  culvert::common::StatsStore stats;
  culvert::upstream::ClusterManager::Options options;
  options.stats = &stats;
  culvert::upstream::ClusterManager clusters(options);
  int i = 0;
  for (auto _ : state) {
    clusters.update(snaps[i++ & 1]->clusters);
    auto picked = clusters.pickEndpoint("big");
    if (!picked) state.SkipWithError("no endpoint");
    benchmark::DoNotOptimize(picked);
  }
}
BENCHMARK(BM_Eds10kEndpointsWorker)->ArgName("maglev")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// A CDS update of 1,000 STATIC clusters (one endpoint each), alternating two versions.
void BM_Cds1kClusters(benchmark::State& state) {
  AdsState s;
  discovery::DiscoveryResponse lds;
  lds.set_type_url(std::string(typeUrl(ResourceType::Listener)));
  s.onResponse(lds, SystemTime{});
  std::string updates[2];
  for (int salt = 0; salt < 2; ++salt) {
    discovery::DiscoveryResponse cds;
    cds.set_type_url(std::string(typeUrl(ResourceType::Cluster)));
    cds.set_version_info(std::to_string(salt));
    for (int c = 0; c < 1000; ++c) {
      envoy::config::cluster::v3::Cluster cl;
      cl.set_name("c" + std::to_string(c));
      cl.set_type(envoy::config::cluster::v3::Cluster::STATIC);
      *cl.mutable_load_assignment() = cla(cl.name(), 1, salt);
      cds.add_resources()->PackFrom(cl);
    }
    updates[salt] = bytesOf(cds);
  }
  int i = 0;
  for (auto _ : state) {
    discovery::DiscoveryResponse r;
    r.ParseFromString(updates[i++ & 1]);
    auto out = s.onResponse(r, SystemTime{});
    auto snap = s.snapshot();
    benchmark::DoNotOptimize(snap);
    if (!out.accepted) state.SkipWithError("rejected");
  }
}
BENCHMARK(BM_Cds1kClusters)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
