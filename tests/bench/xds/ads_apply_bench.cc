// xDS apply cost on the main thread: from a DiscoveryResponse's bytes to the Snapshot
// that is published (decode + validate + translate + assemble). Publishing to workers is
// not included here (see docs/benchmarks.md for what is and is not measured).
//
//   build/tests/bench/xds/xds_ads_apply_bench --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <string>

#include "xds/client/ads_state.h"
#include "xds/proto/envoy/config/cluster/v3/cluster.pb.h"
#include "xds/proto/envoy/config/endpoint/v3/endpoint.pb.h"
#include "xds/proto/envoy/service/discovery/v3/discovery.pb.h"

namespace {

using namespace culvert::xds::client;
namespace discovery = envoy::service::discovery::v3;

envoy::config::cluster::v3::Cluster edsCluster(const std::string& name) {
  envoy::config::cluster::v3::Cluster c;
  c.set_name(name);
  c.set_type(envoy::config::cluster::v3::Cluster::EDS);
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

// An EDS update replacing 10,000 endpoints of one cluster (ROUND_ROBIN).
void BM_Eds10kEndpoints(benchmark::State& state) {
  AdsState s;
  discovery::DiscoveryResponse cds;
  cds.set_type_url(std::string(typeUrl(ResourceType::Cluster)));
  cds.set_version_info("1");
  cds.add_resources()->PackFrom(edsCluster("big"));
  s.onResponse(cds, SystemTime{});
  discovery::DiscoveryResponse lds;
  lds.set_type_url(std::string(typeUrl(ResourceType::Listener)));
  s.onResponse(lds, SystemTime{});
  std::string updates[2];
  for (int salt = 0; salt < 2; ++salt) {
    discovery::DiscoveryResponse eds;
    eds.set_type_url(std::string(typeUrl(ResourceType::ClusterLoadAssignment)));
    eds.set_version_info(std::to_string(salt));
    eds.add_resources()->PackFrom(cla("big", 10000, salt));
    updates[salt] = bytesOf(eds);
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
BENCHMARK(BM_Eds10kEndpoints)->Unit(benchmark::kMillisecond);

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
