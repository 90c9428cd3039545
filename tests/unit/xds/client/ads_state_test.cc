#include "xds/client/ads_state.h"

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "xds/client/ads_client.h"
#include "xds/proto/culvert/v1/tenant.pb.h"
#include "xds/proto/envoy/config/cluster/v3/cluster.pb.h"
#include "xds/proto/envoy/config/core/v3/base.pb.h"
#include "xds/proto/envoy/config/endpoint/v3/endpoint.pb.h"
#include "xds/proto/envoy/config/listener/v3/listener.pb.h"
#include "xds/proto/envoy/config/route/v3/route.pb.h"
#include "xds/proto/envoy/extensions/filters/http/router/v3/router.pb.h"
#include "xds/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb.h"
#include "xds/proto/envoy/service/discovery/v3/discovery.pb.h"

namespace culvert::xds::client {
namespace {

using envoy::service::discovery::v3::DiscoveryRequest;
using envoy::service::discovery::v3::DiscoveryResponse;

template <typename T>
T parse(const std::string& text) {
  T out;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &out)) << text;
  return out;
}

// A virtual listener on vip:80 whose HCM takes its routes from RDS `route`.
envoy::config::listener::v3::Listener rdsListener(const std::string& name, const std::string& vip,
                                                  const std::string& route, const std::string& extra_hcm = "") {
  return parse<envoy::config::listener::v3::Listener>(
      R"(name: ")" + name + R"(" address { socket_address { address: ")" + vip +
      R"(" port_value: 80 } } bind_to_port { value: false }
      filter_chains { filters { name: "envoy.filters.network.http_connection_manager" typed_config {
        [type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager] {
          stat_prefix: "s" rds { route_config_name: ")" +
      route + R"(" config_source { ads {} } } )" + extra_hcm + R"(
          http_filters { name: "envoy.filters.http.router" typed_config {
            [type.googleapis.com/envoy.extensions.filters.http.router.v3.Router] {} } }
        } } } })");
}

envoy::config::route::v3::RouteConfiguration route(const std::string& name, const std::string& cluster) {
  return parse<envoy::config::route::v3::RouteConfiguration>(R"(name: ")" + name + R"(" virtual_hosts {
      name: "vh" domains: "*" routes { match { prefix: "/" } route { cluster: ")" +
                                                              cluster + R"(" } } })");
}

envoy::config::cluster::v3::Cluster edsCluster(const std::string& name) {
  return parse<envoy::config::cluster::v3::Cluster>(R"(name: ")" + name +
                                                     R"(" type: EDS eds_cluster_config { eds_config { ads {} } })");
}

envoy::config::endpoint::v3::ClusterLoadAssignment cla(const std::string& name, const std::string& ip) {
  return parse<envoy::config::endpoint::v3::ClusterLoadAssignment>(
      R"(cluster_name: ")" + name + R"(" endpoints { lb_endpoints { endpoint { address { socket_address {
        address: ")" + ip + R"(" port_value: 8080 } } } } })");
}

template <typename... M>
DiscoveryResponse response(ResourceType type, const std::string& version, const std::string& nonce,
                           const M&... resources) {
  DiscoveryResponse r;
  r.set_type_url(std::string(typeUrl(type)));
  r.set_version_info(version);
  r.set_nonce(nonce);
  (r.add_resources()->PackFrom(resources), ...);
  return r;
}

std::vector<std::string> names(const DiscoveryRequest& r) {
  return {r.resource_names().begin(), r.resource_names().end()};
}

const SystemTime kNow = SystemTime(std::chrono::seconds(1'800'000'000));

// LDS + RDS + CDS + EDS all present and accepted.
void converge(AdsState& s) {
  s.onResponse(response(ResourceType::Listener, "l1", "n1", rdsListener("vip", "10.96.0.10", "r")), kNow);
  s.onResponse(response(ResourceType::Cluster, "c1", "n2", edsCluster("backend")), kNow);
  s.onResponse(response(ResourceType::RouteConfiguration, "r1", "n3", route("r", "backend")), kNow);
  s.onResponse(response(ResourceType::ClusterLoadAssignment, "e1", "n4", cla("backend", "10.244.1.2")), kNow);
}

TEST(AdsState, StreamStartsWithWildcardLdsAndCdsAndTheNodeInTheFirstRequest) {
  AdsState s;
  envoy::config::core::v3::Node node;
  node.set_id("n");
  auto reqs = s.streamStartRequests(node);
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].type_url(), typeUrl(ResourceType::Listener));
  EXPECT_EQ(reqs[0].node().id(), "n");
  EXPECT_EQ(reqs[1].type_url(), typeUrl(ResourceType::Cluster));
  EXPECT_FALSE(reqs[1].has_node());
  EXPECT_EQ(reqs[2].type_url(), "type.googleapis.com/culvert.v1.Tenant");  // wildcard too
  for (const auto& r : reqs) {
    EXPECT_TRUE(r.resource_names().empty());
    EXPECT_EQ(r.version_info(), "");
    EXPECT_EQ(r.response_nonce(), "");
  }
}

TEST(AdsState, AckCarriesVersionAndNonceAndListenerSubscribesToItsRoutes) {
  AdsState s;
  auto out = s.onResponse(response(ResourceType::Listener, "l1", "n1", rdsListener("vip", "10.96.0.10", "r")), kNow);
  EXPECT_TRUE(out.accepted);
  ASSERT_EQ(out.requests.size(), 2u);
  EXPECT_EQ(out.requests[0].type_url(), typeUrl(ResourceType::Listener));
  EXPECT_EQ(out.requests[0].version_info(), "l1");
  EXPECT_EQ(out.requests[0].response_nonce(), "n1");
  EXPECT_FALSE(out.requests[0].has_error_detail());
  EXPECT_EQ(out.requests[1].type_url(), typeUrl(ResourceType::RouteConfiguration));
  EXPECT_EQ(names(out.requests[1]), std::vector<std::string>{"r"});
  EXPECT_EQ(out.requests[1].version_info(), "");
  // The listener warms until its route configuration arrives.
  EXPECT_TRUE(s.snapshot()->listeners->by_name.empty());
  out = s.onResponse(response(ResourceType::RouteConfiguration, "r1", "n2", route("r", "backend")), kNow);
  ASSERT_EQ(out.requests.size(), 1u);
  EXPECT_EQ(out.requests[0].version_info(), "r1");
  EXPECT_EQ(out.requests[0].response_nonce(), "n2");
  EXPECT_EQ(names(out.requests[0]), std::vector<std::string>{"r"});
  auto snap = s.snapshot();
  ASSERT_EQ(snap->listeners->by_name.count("vip"), 1u);
  ASSERT_TRUE(snap->listeners->by_name.at("vip")->filter_chains[0].http.route_config);
  EXPECT_EQ(snap->listeners->by_name.at("vip")->filter_chains[0].http.route_config->virtual_hosts[0].routes[0]
                .route->cluster,
            "backend");
}

TEST(AdsState, EdsClusterWarmsUntilItsEndpointsArrive) {
  AdsState s;
  auto out = s.onResponse(response(ResourceType::Cluster, "c1", "n1", edsCluster("backend")), kNow);
  ASSERT_EQ(out.requests.size(), 2u);
  EXPECT_EQ(out.requests[1].type_url(), typeUrl(ResourceType::ClusterLoadAssignment));
  EXPECT_EQ(names(out.requests[1]), std::vector<std::string>{"backend"});
  EXPECT_TRUE(s.snapshot()->clusters->by_name.empty());
  s.onResponse(response(ResourceType::ClusterLoadAssignment, "e1", "n2", cla("backend", "10.244.1.2")), kNow);
  auto snap = s.snapshot();
  ASSERT_EQ(snap->clusters->by_name.count("backend"), 1u);
  ASSERT_EQ(snap->clusters->by_name.at("backend")->endpoints.size(), 1u);
  EXPECT_EQ(snap->clusters->by_name.at("backend")->endpoints[0].address.toString(), "10.244.1.2:8080");
}

TEST(AdsState, EdsClusterTakesItsAssignmentsLocalities) {
  AdsState s;
  s.onResponse(response(ResourceType::Cluster, "c1", "n1", edsCluster("backend")), kNow);
  auto assignment = cla("backend", "10.244.1.2");
  assignment.mutable_endpoints(0)->mutable_locality()->set_zone("a");
  assignment.mutable_endpoints(0)->mutable_load_balancing_weight()->set_value(7);
  s.onResponse(response(ResourceType::ClusterLoadAssignment, "e1", "n2", assignment), kNow);
  const auto& cluster = *s.snapshot()->clusters->by_name.at("backend");
  ASSERT_EQ(cluster.localities.size(), 1u);
  EXPECT_EQ(cluster.localities[0], (config::Locality{7, 0, 1}));
  EXPECT_EQ(cluster.endpoints[0].locality, 0u);
}

TEST(AdsState, AnEndpointUpdateOfOneClusterKeepsEveryOtherClusterObject) {
  AdsState s;
  s.onResponse(response(ResourceType::Cluster, "c1", "n1", edsCluster("a"), edsCluster("b")), kNow);
  s.onResponse(response(ResourceType::ClusterLoadAssignment, "e1", "n2", cla("a", "10.244.1.2"), cla("b", "10.244.1.3")),
               kNow);
  auto before = s.snapshot();
  ASSERT_EQ(before->clusters->by_name.size(), 2u);
  s.onResponse(response(ResourceType::ClusterLoadAssignment, "e2", "n3", cla("a", "10.244.1.4"), cla("b", "10.244.1.3")),
               kNow);
  auto after = s.snapshot();
  // Workers keep their state for a cluster while its object stays the same.
  EXPECT_EQ(after->clusters->by_name.at("b"), before->clusters->by_name.at("b"));
  EXPECT_NE(after->clusters->by_name.at("a"), before->clusters->by_name.at("a"));
  EXPECT_EQ(after->clusters->by_name.at("a")->endpoints[0].address.toString(), "10.244.1.4:8080");
  // It holds the EDS resource's endpoints, not a copy of them.
  EXPECT_TRUE(after->clusters->by_name.at("a")->endpoints.sharesWith(
      s.state(ResourceType::ClusterLoadAssignment).resources.at("a").endpoints->endpoints));
  // A CDS change of the cluster resolves it again with the endpoints it has.
  s.onResponse(response(ResourceType::Cluster, "c2", "n4", edsCluster("a"),
                        parse<envoy::config::cluster::v3::Cluster>(
                            R"(name: "b" type: EDS lb_policy: RANDOM eds_cluster_config { eds_config { ads {} } })")),
               kNow);
  auto recds = s.snapshot();
  EXPECT_NE(recds->clusters->by_name.at("b"), after->clusters->by_name.at("b"));
  EXPECT_EQ(recds->clusters->by_name.at("b")->endpoints[0].address.toString(), "10.244.1.3:8080");
  EXPECT_EQ(recds->clusters->by_name.at("a"), after->clusters->by_name.at("a"));
}

TEST(AdsState, AResourceResentUnchangedKeepsItsObjectAndTakesTheNewVersion) {
  AdsState s;
  s.onResponse(response(ResourceType::Cluster, "c1", "n1", edsCluster("a"), edsCluster("b")), kNow);
  auto before = s.state(ResourceType::Cluster).resources.at("a").cluster;
  // State of the World resends every cluster with each change: only "b" changed here.
  auto out = s.onResponse(
      response(ResourceType::Cluster, "c2", "n2", edsCluster("a"),
               parse<envoy::config::cluster::v3::Cluster>(
                   R"(name: "b" type: EDS lb_policy: RANDOM eds_cluster_config { eds_config { ads {} } })")),
      kNow + std::chrono::seconds(5));
  ASSERT_TRUE(out.accepted);
  EXPECT_TRUE(out.changed);
  const auto& a = s.state(ResourceType::Cluster).resources.at("a");
  EXPECT_EQ(a.cluster, before);
  EXPECT_EQ(a.version, "c2");
  EXPECT_EQ(a.last_updated, kNow);
  // Nothing changed at all: not a change, still an ACK of the new version.
  out = s.onResponse(response(ResourceType::Cluster, "c3", "n3", edsCluster("a"),
                              parse<envoy::config::cluster::v3::Cluster>(
                                  R"(name: "b" type: EDS lb_policy: RANDOM eds_cluster_config { eds_config { ads {} } })")),
                     kNow);
  EXPECT_TRUE(out.accepted);
  EXPECT_FALSE(out.changed);
  EXPECT_EQ(out.requests[0].version_info(), "c3");
  // An unchanged resource twice in one response is still a duplicate.
  out = s.onResponse(response(ResourceType::Cluster, "c4", "n4", edsCluster("a"), edsCluster("a")), kNow);
  EXPECT_FALSE(out.accepted);
  ASSERT_EQ(out.rejected.size(), 1u);
  EXPECT_EQ(out.rejected[0].name, "a");
  EXPECT_NE(out.rejected[0].reason.find("duplicate"), std::string::npos);
  // The bytes of "a" with a second name field appended decode as "z" (the last wins):
  // a new cluster, not "a" again.
  envoy::config::cluster::v3::Cluster renamed;
  renamed.set_name("z");
  DiscoveryResponse twice = response(ResourceType::Cluster, "c5", "n5", edsCluster("a"));
  auto* extra = twice.add_resources();
  extra->set_type_url(twice.resources(0).type_url());
  extra->set_value(twice.resources(0).value() + renamed.SerializeAsString());
  out = s.onResponse(twice, kNow);
  EXPECT_TRUE(out.accepted) << (out.rejected.empty() ? "" : out.rejected[0].reason);
  EXPECT_TRUE(s.state(ResourceType::Cluster).resources.contains("z"));
  EXPECT_EQ(s.state(ResourceType::Cluster).resources.at("a").cluster, before);
}

TEST(AdsState, ListenersKeepTheirObjectsUntilTheirOwnResourceOrRoutesChange) {
  AdsState s;
  converge(s);
  auto before = s.snapshot();
  const auto& vip = before->listeners->by_name.at("vip");
  // EDS and CDS updates publish the very same listener: workers and BPF capture see no change.
  s.onResponse(response(ResourceType::ClusterLoadAssignment, "e2", "n5", cla("backend", "10.244.1.9")), kNow);
  s.onResponse(response(ResourceType::Cluster, "c2", "n6", edsCluster("backend"), edsCluster("other")), kNow);
  EXPECT_EQ(s.snapshot()->listeners->by_name.at("vip"), vip);
  // A new version of its route resolves it again, with the new route.
  s.onResponse(response(ResourceType::RouteConfiguration, "r2", "n7", route("r", "other")), kNow);
  auto rerouted = s.snapshot()->listeners->by_name.at("vip");
  EXPECT_NE(rerouted, vip);
  EXPECT_EQ(rerouted->filter_chains[0].http.route_config->virtual_hosts[0].routes[0].route->cluster, "other");
  // So does a new version of the listener itself.
  s.onResponse(response(ResourceType::Listener, "l2", "n8", rdsListener("vip", "10.96.0.11", "r")), kNow);
  auto moved = s.snapshot()->listeners->by_name.at("vip");
  EXPECT_NE(moved, rerouted);
  EXPECT_EQ(moved->address.toString(), "10.96.0.11:80");
  EXPECT_EQ(moved->filter_chains[0].http.route_config, rerouted->filter_chains[0].http.route_config);
}

TEST(AdsState, PartlyInvalidResponseAppliesValidKeepsLastGoodAndNacksNamingEveryBadResource) {
  AdsState s;
  converge(s);
  // v2: "vip" becomes invalid (a non-optional unsupported HTTP filter), "vip2" is new
  // and valid, "bad" is new and invalid.
  auto bad_vip = rdsListener("vip", "10.96.0.10", "r",
                             R"(http_filters { name: "envoy.filters.http.lua" typed_config {
                                   [type.googleapis.com/google.protobuf.Empty] {} } })");
  auto bad_new = rdsListener("bad", "10.96.0.12", "");
  auto out = s.onResponse(
      response(ResourceType::Listener, "l2", "n5", bad_vip, rdsListener("vip2", "10.96.0.11", "r"), bad_new), kNow);
  EXPECT_FALSE(out.accepted);
  ASSERT_GE(out.requests.size(), 1u);
  const auto& nack = out.requests[0];
  EXPECT_EQ(nack.version_info(), "l1");  // the last fully accepted version
  EXPECT_EQ(nack.response_nonce(), "n5");
  ASSERT_TRUE(nack.has_error_detail());
  EXPECT_EQ(nack.error_detail().code(), 3);
  EXPECT_NE(nack.error_detail().message().find("vip: "), std::string::npos) << nack.error_detail().message();
  EXPECT_NE(nack.error_detail().message().find("bad: "), std::string::npos) << nack.error_detail().message();
  EXPECT_NE(nack.error_detail().message().find("envoy.filters.http.lua"), std::string::npos)
      << nack.error_detail().message();
  EXPECT_EQ(nack.error_detail().message().find("vip2"), std::string::npos);
  ASSERT_EQ(out.rejected.size(), 2u);

  auto snap = s.snapshot();
  EXPECT_EQ(snap->listeners->by_name.count("vip"), 1u);   // last good kept
  EXPECT_EQ(snap->listeners->by_name.count("vip2"), 1u);  // valid one applied
  EXPECT_EQ(snap->listeners->by_name.count("bad"), 0u);
  EXPECT_EQ(s.state(ResourceType::Listener).accepted_version, "l1");
  EXPECT_EQ(s.state(ResourceType::Listener).rejected_version, "l2");
  EXPECT_EQ(s.state(ResourceType::Listener).resources.at("vip").version, "l1");
  EXPECT_EQ(s.state(ResourceType::Listener).resources.at("vip2").version, "l2");

  // Repaired: ACK with the new version.
  out = s.onResponse(response(ResourceType::Listener, "l3", "n6", rdsListener("vip", "10.96.0.10", "r")), kNow);
  EXPECT_TRUE(out.accepted);
  EXPECT_EQ(out.requests[0].version_info(), "l3");
  EXPECT_FALSE(out.requests[0].has_error_detail());
  EXPECT_EQ(s.snapshot()->listeners->by_name.count("vip2"), 0u);  // SotW: absent = removed
}

TEST(AdsState, SotwRemovalForListenersButNotForRoutes) {
  AdsState s;
  converge(s);
  // An RDS response without "r" does not remove it.
  DiscoveryResponse empty_rds = response(ResourceType::RouteConfiguration, "r2", "n5");
  auto out = s.onResponse(empty_rds, kNow);
  EXPECT_TRUE(out.accepted);
  EXPECT_EQ(s.state(ResourceType::RouteConfiguration).resources.count("r"), 1u);
  EXPECT_EQ(s.snapshot()->listeners->by_name.count("vip"), 1u);
  // An LDS response without "vip" removes it, and then nothing names "r": RDS
  // unsubscribes (an empty name list) and drops it.
  out = s.onResponse(response(ResourceType::Listener, "l2", "n6"), kNow);
  EXPECT_TRUE(out.accepted);
  EXPECT_TRUE(s.snapshot()->listeners->by_name.empty());
  ASSERT_EQ(out.requests.size(), 2u);
  EXPECT_EQ(out.requests[1].type_url(), typeUrl(ResourceType::RouteConfiguration));
  EXPECT_TRUE(out.requests[1].resource_names().empty());
  EXPECT_EQ(out.requests[1].response_nonce(), "n5");
  EXPECT_TRUE(s.state(ResourceType::RouteConfiguration).resources.empty());
}

TEST(AdsState, ChangedRouteNameSwitchesSubscriptionAndKeepsTheActiveListenerWhileTheNewOneWarms) {
  AdsState s;
  converge(s);
  auto out = s.onResponse(response(ResourceType::Listener, "l2", "n5", rdsListener("vip", "10.96.0.10", "r2")), kNow);
  ASSERT_EQ(out.requests.size(), 2u);
  EXPECT_EQ(names(out.requests[1]), std::vector<std::string>{"r2"});
  // Make-before-break: the old listener (with route "r") stays active.
  auto snap = s.snapshot();
  ASSERT_EQ(snap->listeners->by_name.count("vip"), 1u);
  EXPECT_EQ(snap->listeners->by_name.at("vip")->filter_chains[0].http.route_config->name, "r");
  s.onResponse(response(ResourceType::RouteConfiguration, "r2", "n6", route("r2", "backend")), kNow);
  EXPECT_EQ(s.snapshot()->listeners->by_name.at("vip")->filter_chains[0].http.route_config->name, "r2");
}

TEST(AdsState, UnsubscribedRdsResourcesInAResponseAreIgnored) {
  AdsState s;
  converge(s);
  auto out = s.onResponse(
      response(ResourceType::RouteConfiguration, "r2", "n5", route("r", "backend"), route("other", "x")), kNow);
  EXPECT_TRUE(out.accepted);
  EXPECT_EQ(s.state(ResourceType::RouteConfiguration).resources.count("other"), 0u);
}

TEST(AdsState, WrongAnyTypeAndDuplicatesAndUnknownTypesAreRejected) {
  AdsState s;
  auto r = response(ResourceType::Listener, "l1", "n1", rdsListener("vip", "10.96.0.10", "r"), edsCluster("c"),
                    rdsListener("vip", "10.96.0.11", "r"));
  auto out = s.onResponse(r, kNow);
  EXPECT_FALSE(out.accepted);
  ASSERT_EQ(out.rejected.size(), 2u);
  EXPECT_EQ(out.rejected[0].name, "resources[1]");
  EXPECT_NE(out.rejected[0].reason.find("does not match"), std::string::npos);
  EXPECT_EQ(out.rejected[1].name, "vip");
  EXPECT_NE(out.rejected[1].reason.find("duplicate"), std::string::npos);
  EXPECT_EQ(out.requests[0].version_info(), "");

  DiscoveryResponse unknown;
  unknown.set_type_url("type.googleapis.com/envoy.config.core.v3.Whatever");
  unknown.set_nonce("n2");
  out = s.onResponse(unknown, kNow);
  EXPECT_FALSE(out.accepted);
  ASSERT_EQ(out.requests.size(), 1u);
  EXPECT_EQ(out.requests[0].type_url(), unknown.type_url());
  EXPECT_EQ(out.requests[0].response_nonce(), "n2");
  EXPECT_TRUE(out.requests[0].has_error_detail());
}

TEST(AdsState, InitialFetchTimeoutActivatesWaitingListenersAndClusters) {
  AdsState s;
  s.onResponse(response(ResourceType::Listener, "l1", "n1", rdsListener("vip", "10.96.0.10", "r")), kNow);
  s.onResponse(response(ResourceType::Cluster, "c1", "n2", edsCluster("backend")), kNow);
  EXPECT_TRUE(s.snapshot()->listeners->by_name.empty());
  EXPECT_TRUE(s.snapshot()->clusters->by_name.empty());
  EXPECT_TRUE(s.expireWarming(kNow + std::chrono::seconds(14), std::chrono::seconds(15)).empty());
  auto expired = s.expireWarming(kNow + std::chrono::seconds(15), std::chrono::seconds(15));
  EXPECT_EQ(expired, (std::vector<std::string>{"RDS r", "EDS backend"}));
  auto snap = s.snapshot();
  ASSERT_EQ(snap->listeners->by_name.count("vip"), 1u);
  const auto& rc = snap->listeners->by_name.at("vip")->filter_chains[0].http.route_config;
  ASSERT_TRUE(rc);
  EXPECT_TRUE(rc->virtual_hosts.empty());
  ASSERT_EQ(snap->clusters->by_name.count("backend"), 1u);
  EXPECT_TRUE(snap->clusters->by_name.at("backend")->endpoints.empty());
  // Only once; a late arrival then applies normally.
  EXPECT_TRUE(s.expireWarming(kNow + std::chrono::seconds(30), std::chrono::seconds(15)).empty());
  s.onResponse(response(ResourceType::ClusterLoadAssignment, "e1", "n3", cla("backend", "10.244.1.2")), kNow);
  EXPECT_EQ(s.snapshot()->clusters->by_name.at("backend")->endpoints.size(), 1u);
}

TEST(AdsState, InitialFetchNeedsLdsAndCds) {
  AdsState s;
  EXPECT_FALSE(s.initialFetchDone());
  s.onResponse(response(ResourceType::Listener, "l1", "n1"), kNow);
  EXPECT_FALSE(s.initialFetchDone());
  s.onResponse(response(ResourceType::Cluster, "c1", "n2"), kNow);
  EXPECT_TRUE(s.initialFetchDone());
}

TEST(AdsState, StreamRestartResendsAcceptedVersionsAndNamesWithoutNonces) {
  AdsState s;
  converge(s);
  envoy::config::core::v3::Node node;
  auto reqs = s.streamStartRequests(node);
  ASSERT_EQ(reqs.size(), 5u);  // LDS, CDS, RDS, EDS, Tenants
  std::map<std::string, DiscoveryRequest> by_type;
  for (auto& r : reqs) {
    EXPECT_EQ(r.response_nonce(), "");
    by_type[r.type_url()] = r;
  }
  EXPECT_EQ(by_type[std::string(typeUrl(ResourceType::Listener))].version_info(), "l1");
  EXPECT_EQ(by_type[std::string(typeUrl(ResourceType::ClusterLoadAssignment))].version_info(), "e1");
  EXPECT_EQ(names(by_type[std::string(typeUrl(ResourceType::ClusterLoadAssignment))]),
            std::vector<std::string>{"backend"});
}

TEST(AdsState, ConfigDumpListsResourcesAndLastRejection) {
  AdsState s;
  converge(s);
  s.onResponse(response(ResourceType::Cluster, "c2", "n9", edsCluster("backend"), edsCluster("")), kNow);
  auto dump = s.configDumpJson();
  EXPECT_NE(dump.find(R"("version": "c1")"), std::string::npos) << dump;
  EXPECT_NE(dump.find(R"("name": "backend")"), std::string::npos) << dump;
  EXPECT_NE(dump.find(R"("last_rejected")"), std::string::npos) << dump;
  EXPECT_NE(dump.find("a cluster needs a name"), std::string::npos) << dump;
  EXPECT_NE(dump.find("2027-01-15T08:00:00.000Z"), std::string::npos) << dump;
}

using envoy::service::discovery::v3::DeltaDiscoveryRequest;
using envoy::service::discovery::v3::DeltaDiscoveryResponse;

template <typename... M>
DeltaDiscoveryResponse delta(ResourceType type, const std::string& nonce, std::vector<std::string> removed,
                             const std::pair<std::string, M>&... versioned) {
  DeltaDiscoveryResponse r;
  r.set_type_url(std::string(typeUrl(type)));
  r.set_nonce(nonce);
  r.set_system_version_info("sys-" + nonce);
  (
      [&] {
        auto* item = r.add_resources();
        item->set_version(versioned.first);
        item->mutable_resource()->PackFrom(versioned.second);
        if constexpr (std::is_same_v<M, envoy::config::endpoint::v3::ClusterLoadAssignment>) {
          item->set_name(versioned.second.cluster_name());
        } else {
          item->set_name(versioned.second.name());
        }
      }(),
      ...);
  for (auto& n : removed) r.add_removed_resources(n);
  return r;
}

std::vector<std::string> subs(const DeltaDiscoveryRequest& r) {
  return {r.resource_names_subscribe().begin(), r.resource_names_subscribe().end()};
}
std::vector<std::string> unsubs(const DeltaDiscoveryRequest& r) {
  return {r.resource_names_unsubscribe().begin(), r.resource_names_unsubscribe().end()};
}

TEST(AdsStateDelta, AckNackSubscribeUnsubscribeAndRemoval) {
  AdsState s;
  envoy::config::core::v3::Node node;
  node.set_id("n");
  auto start = s.deltaStreamStartRequests(node);
  ASSERT_EQ(start.size(), 3u);  // LDS, CDS, Tenants
  EXPECT_EQ(start[0].node().id(), "n");
  EXPECT_TRUE(start[0].resource_names_subscribe().empty());  // wildcard

  auto out = s.onDeltaResponse(delta(ResourceType::Listener, "d1", {}, std::pair{std::string("v1"),
                                                                          rdsListener("vip", "10.96.0.10", "r")}),
                               kNow);
  EXPECT_TRUE(out.accepted);
  ASSERT_EQ(out.requests.size(), 2u);
  EXPECT_EQ(out.requests[0].response_nonce(), "d1");
  EXPECT_FALSE(out.requests[0].has_error_detail());
  EXPECT_EQ(out.requests[1].type_url(), typeUrl(ResourceType::RouteConfiguration));
  EXPECT_EQ(subs(out.requests[1]), std::vector<std::string>{"r"});

  // A second listener arrives alone: the first stays (delta adds, it does not replace).
  out = s.onDeltaResponse(delta(ResourceType::Listener, "d2", {}, std::pair{std::string("v1"),
                                                                     rdsListener("vip2", "10.96.0.11", "r2")}),
                          kNow);
  EXPECT_EQ(s.state(ResourceType::Listener).resources.size(), 2u);
  ASSERT_EQ(out.requests.size(), 2u);
  EXPECT_EQ(subs(out.requests[1]), std::vector<std::string>{"r2"});
  EXPECT_TRUE(unsubs(out.requests[1]).empty());

  // An invalid update of vip keeps its last good version and is NACKed by name.
  auto bad = rdsListener("vip", "10.96.0.10", "");
  out = s.onDeltaResponse(delta(ResourceType::Listener, "d3", {}, std::pair{std::string("v2"), bad}), kNow);
  EXPECT_FALSE(out.accepted);
  ASSERT_TRUE(out.requests[0].has_error_detail());
  EXPECT_EQ(out.requests[0].response_nonce(), "d3");
  EXPECT_NE(out.requests[0].error_detail().message().find("vip: "), std::string::npos);
  EXPECT_EQ(s.state(ResourceType::Listener).resources.at("vip").version, "v1");

  // removed_resources removes; "r2" is then unsubscribed.
  out = s.onDeltaResponse(delta(ResourceType::Listener, "d4", {"vip2"}), kNow);
  EXPECT_TRUE(out.accepted);
  EXPECT_EQ(s.state(ResourceType::Listener).resources.count("vip2"), 0u);
  ASSERT_EQ(out.requests.size(), 2u);
  EXPECT_EQ(unsubs(out.requests[1]), std::vector<std::string>{"r2"});

  // A reconnect tells the server what is held.
  s.onDeltaResponse(delta(ResourceType::RouteConfiguration, "d5", {}, std::pair{std::string("rv1"),
                                                                       route("r", "backend")}),
                    kNow);
  auto again = s.deltaStreamStartRequests(node);
  std::map<std::string, DeltaDiscoveryRequest> by_type;
  for (auto& r : again) by_type[r.type_url()] = r;
  const auto& rds = by_type[std::string(typeUrl(ResourceType::RouteConfiguration))];
  EXPECT_EQ(subs(rds), std::vector<std::string>{"r"});
  EXPECT_EQ(rds.initial_resource_versions().at("r"), "rv1");
  EXPECT_EQ(by_type[std::string(typeUrl(ResourceType::Listener))].initial_resource_versions().at("vip"), "v1");
}

TEST(AdsStateDelta, ANameThatDoesNotMatchThePayloadIsRejected) {
  AdsState s;
  DeltaDiscoveryResponse r;
  r.set_type_url(std::string(typeUrl(ResourceType::Cluster)));
  r.set_nonce("x");
  auto* item = r.add_resources();
  item->set_name("other");
  item->mutable_resource()->PackFrom(edsCluster("backend"));
  auto out = s.onDeltaResponse(r, kNow);
  EXPECT_FALSE(out.accepted);
  ASSERT_EQ(out.rejected.size(), 1u);
  EXPECT_NE(out.rejected[0].reason.find("delivered as 'other'"), std::string::npos);
  // The bytes of an accepted resource delivered under another name are rejected too.
  item->set_name("backend");
  ASSERT_TRUE(s.onDeltaResponse(r, kNow).accepted);
  item->set_name("other");
  out = s.onDeltaResponse(r, kNow);
  EXPECT_FALSE(out.accepted);
  ASSERT_EQ(out.rejected.size(), 1u);
  EXPECT_NE(out.rejected[0].reason.find("delivered as 'other'"), std::string::npos);
  // Under its own name they are an unchanged resource: accepted, nothing changes.
  item->set_name("backend");
  out = s.onDeltaResponse(r, kNow);
  EXPECT_TRUE(out.accepted);
  EXPECT_FALSE(out.changed);
}

TEST(Backoff, GrowsDoublingToTheCapWithJitterBetweenHalfAndFull) {
  using std::chrono::milliseconds;
  EXPECT_EQ(backoffDelay(0, milliseconds(500), milliseconds(30000), 1.0), milliseconds(500));
  EXPECT_EQ(backoffDelay(0, milliseconds(500), milliseconds(30000), 0.0), milliseconds(250));
  EXPECT_EQ(backoffDelay(3, milliseconds(500), milliseconds(30000), 1.0), milliseconds(4000));
  EXPECT_EQ(backoffDelay(10, milliseconds(500), milliseconds(30000), 1.0), milliseconds(30000));
  EXPECT_EQ(backoffDelay(1000, milliseconds(500), milliseconds(30000), 0.0), milliseconds(15000));
}

TEST(LastGood, RoundTripsEveryAcceptedResourceAndItsVersion) {
  AdsState s;
  converge(s);
  auto file = std::filesystem::path(::testing::TempDir()) / ("last_good_" + std::to_string(::getpid()));
  ASSERT_TRUE(writeFileAtomically(file, encodeLastGood(s, kNow)));
  AdsState restored;
  auto loaded = readLastGood(file, restored);
  std::filesystem::remove(file);
  ASSERT_TRUE(loaded) << loaded.error().describe();
  EXPECT_EQ(loaded->written, kNow);
  EXPECT_EQ(loaded->resources, 4u);
  EXPECT_TRUE(loaded->rejected.empty());
  EXPECT_EQ(restored.state(ResourceType::ClusterLoadAssignment).accepted_version, "e1");
  EXPECT_EQ(restored.state(ResourceType::Listener).resources.at("vip").version, "l1");
  auto snap = restored.snapshot();
  EXPECT_EQ(snap->listeners->by_name.count("vip"), 1u);
  ASSERT_EQ(snap->clusters->by_name.count("backend"), 1u);
  EXPECT_EQ(snap->clusters->by_name.at("backend")->endpoints.size(), 1u);
}

TEST(LastGood, RejectsACorruptFile) {
  auto file = std::filesystem::path(::testing::TempDir()) / ("corrupt_" + std::to_string(::getpid()));
  {
    std::ofstream out(file);
    out << "culvert-xds-last-good v1 1\n\x01\x02";
  }
  AdsState s;
  auto loaded = readLastGood(file, s);
  std::filesystem::remove(file);
  EXPECT_FALSE(loaded);
}

}  // namespace
}  // namespace culvert::xds::client

namespace culvert::xds::client {
namespace {

culvert::v1::Tenant tenantResource(const std::string& name, uint32_t max_in_flight) {
  return parse<culvert::v1::Tenant>(R"(name: ")" + name + R"(" limits { max_requests_in_flight { value: )" +
                                    std::to_string(max_in_flight) + R"( } } allowed_listeners: "vip")");
}

TEST(AdsStateTenant, SotwIsAWildcardSubscriptionAndTheSnapshotCarriesTheTenants) {
  AdsState s;
  auto out = s.onResponse(response(ResourceType::Tenant, "t1", "n1", tenantResource("team-a", 4),
                                   tenantResource("team-b", 8)),
                          kNow);
  EXPECT_TRUE(out.accepted);
  ASSERT_EQ(out.requests.size(), 1u);
  EXPECT_EQ(out.requests[0].version_info(), "t1");
  auto snap = s.snapshot();
  ASSERT_EQ(snap->tenants->by_name.size(), 2u);
  EXPECT_EQ(snap->tenants->by_name.at("team-a")->limits.max_requests_in_flight, 4u);
  EXPECT_EQ(snap->tenants->by_name.at("team-a")->allowed_listeners, std::vector<std::string>{"vip"});
  EXPECT_NE(snap->version.find("TENANT=t1"), std::string::npos);

  // State of the World: a tenant the next response does not carry is removed.
  out = s.onResponse(response(ResourceType::Tenant, "t2", "n2", tenantResource("team-b", 9)), kNow);
  snap = s.snapshot();
  ASSERT_EQ(snap->tenants->by_name.size(), 1u);
  EXPECT_EQ(snap->tenants->by_name.at("team-b")->limits.max_requests_in_flight, 9u);
  EXPECT_NE(s.configDumpJson().find("culvert.v1.Tenant"), std::string::npos);
}

TEST(AdsStateTenant, AnInvalidTenantIsNackedByNameAndKeepsItsLastGoodVersion) {
  AdsState s;
  s.onResponse(response(ResourceType::Tenant, "t1", "n1", tenantResource("team-a", 4), tenantResource("team-b", 1)),
               kNow);
  auto bad = parse<culvert::v1::Tenant>(R"(name: "team-a" weight { value: 0 })");
  auto out = s.onResponse(response(ResourceType::Tenant, "t2", "n2", bad, tenantResource("team-b", 9)), kNow);
  EXPECT_FALSE(out.accepted);
  ASSERT_EQ(out.rejected.size(), 1u);
  EXPECT_EQ(out.rejected[0].name, "team-a");
  EXPECT_NE(out.rejected[0].reason.find("weight"), std::string::npos);
  EXPECT_EQ(out.requests[0].version_info(), "t1");
  auto snap = s.snapshot();
  EXPECT_EQ(snap->tenants->by_name.at("team-a")->limits.max_requests_in_flight, 4u);
  // The other tenant's update in the same response applies.
  EXPECT_EQ(snap->tenants->by_name.at("team-b")->limits.max_requests_in_flight, 9u);
}

TEST(AdsStateTenant, DeltaAddsAndRemovesTenants) {
  AdsState s;
  auto out = s.onDeltaResponse(
      delta(ResourceType::Tenant, "d1", {}, std::pair{std::string("v1"), tenantResource("team-a", 4)}), kNow);
  EXPECT_TRUE(out.accepted);
  EXPECT_EQ(s.snapshot()->tenants->by_name.count("team-a"), 1u);
  out = s.onDeltaResponse(delta(ResourceType::Tenant, "d2", {"team-a"}), kNow);
  EXPECT_TRUE(out.accepted);
  EXPECT_TRUE(s.snapshot()->tenants->by_name.empty());
}

}  // namespace
}  // namespace culvert::xds::client
