#include "xds/translate/upstream_policies.h"

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <string>

#include "xds/proto/culvert/v1/cluster_extensions.pb.h"
#include "xds/proto/envoy/config/cluster/v3/cluster.pb.h"
#include "xds/proto/envoy/config/endpoint/v3/endpoint.pb.h"
#include "xds/proto/envoy/config/route/v3/route.pb.h"
#include "xds/translate/translate.h"

namespace culvert::xds::translate {
namespace {

using envoy::config::cluster::v3::Cluster;
using envoy::config::endpoint::v3::ClusterLoadAssignment;
using envoy::config::route::v3::RouteAction;

template <typename T>
T parse(const std::string& text) {
  T out;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &out)) << text;
  return out;
}

common::Result<config::Cluster> cluster(const std::string& extra) {
  return translateCluster(parse<Cluster>(R"(name: "c" type: STATIC )" + extra));
}

void expectRejected(const std::string& extra, const std::string& where) {
  auto r = cluster(extra);
  ASSERT_FALSE(r) << extra;
  EXPECT_EQ(r.error().where, where) << r.error().describe();
}

TEST(TranslateUpstreamPolicies, LbPoliciesAndTheirConfigs) {
  auto lr = cluster(R"(lb_policy: LEAST_REQUEST least_request_lb_config {
      choice_count { value: 3 } active_request_bias { default_value: 0.5 } })");
  ASSERT_TRUE(lr) << lr.error().describe();
  EXPECT_EQ(lr->lb_policy, config::LbPolicy::LeastRequest);
  EXPECT_EQ(lr->least_request.choice_count, 3u);
  EXPECT_DOUBLE_EQ(lr->least_request.active_request_bias, 0.5);

  auto ring = cluster(R"(lb_policy: RING_HASH ring_hash_lb_config { minimum_ring_size { value: 64 } maximum_ring_size { value: 4096 } })");
  ASSERT_TRUE(ring) << ring.error().describe();
  EXPECT_EQ(ring->lb_policy, config::LbPolicy::RingHash);
  EXPECT_EQ(ring->ring_hash.minimum_ring_size, 64u);
  EXPECT_EQ(ring->ring_hash.maximum_ring_size, 4096u);

  auto maglev = cluster(R"(lb_policy: MAGLEV maglev_lb_config { table_size { value: 251 } })");
  ASSERT_TRUE(maglev) << maglev.error().describe();
  EXPECT_EQ(maglev->maglev_table_size, 251u);
  auto maglev_default = cluster(R"(lb_policy: MAGLEV)");
  ASSERT_TRUE(maglev_default);
  EXPECT_EQ(maglev_default->maglev_table_size, 65537u);

  auto random = cluster(R"(lb_policy: RANDOM common_lb_config { healthy_panic_threshold { value: 0 } })");
  ASSERT_TRUE(random);
  EXPECT_EQ(random->lb_policy, config::LbPolicy::Random);
  EXPECT_EQ(random->healthy_panic_threshold, 0u);
  EXPECT_EQ(cluster("")->healthy_panic_threshold, 50u);

  expectRejected(R"(lb_policy: ROUND_ROBIN ring_hash_lb_config {})", "ring_hash_lb_config");
  expectRejected(R"(lb_policy: RING_HASH ring_hash_lb_config { hash_function: MURMUR_HASH_2 })",
                 "ring_hash_lb_config.hash_function");
  expectRejected(R"(lb_policy: RING_HASH ring_hash_lb_config { minimum_ring_size { value: 100 } maximum_ring_size { value: 10 } })",
                 "ring_hash_lb_config");
  expectRejected(R"(lb_policy: MAGLEV maglev_lb_config { table_size { value: 100 } })", "maglev_lb_config.table_size");
  expectRejected(R"(lb_policy: LEAST_REQUEST least_request_lb_config { choice_count { value: 1 } })",
                 "least_request_lb_config.choice_count");
  expectRejected(R"(lb_policy: LEAST_REQUEST least_request_lb_config { active_request_bias { runtime_key: "k" } })",
                 "least_request_lb_config.active_request_bias.runtime_key");
  expectRejected(R"(common_lb_config { healthy_panic_threshold { value: 101 } })", "common_lb_config.healthy_panic_threshold");
}

TEST(TranslateUpstreamPolicies, SlowStart) {
  auto rr = cluster(R"(round_robin_lb_config { slow_start_config {
      slow_start_window { seconds: 30 } aggression { default_value: 2 } min_weight_percent { value: 5 } } })");
  ASSERT_TRUE(rr) << rr.error().describe();
  ASSERT_TRUE(rr->slow_start);
  EXPECT_EQ(rr->slow_start->window, std::chrono::seconds(30));
  EXPECT_EQ(rr->slow_start->aggression, 2.0);
  EXPECT_EQ(rr->slow_start->min_weight_percent, 5.0);
  auto lr = cluster(R"(lb_policy: LEAST_REQUEST least_request_lb_config { slow_start_config {
      slow_start_window { seconds: 10 } } })");
  ASSERT_TRUE(lr) << lr.error().describe();
  ASSERT_TRUE(lr->slow_start);
  EXPECT_EQ(lr->slow_start->aggression, 1.0);           // Envoy's defaults
  EXPECT_EQ(lr->slow_start->min_weight_percent, 10.0);
  auto none = cluster(R"(round_robin_lb_config { slow_start_config { aggression { default_value: 2 } } })");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->slow_start) << "no window, no slow start";
  expectRejected(R"(lb_policy: RANDOM round_robin_lb_config {})", "round_robin_lb_config");
  expectRejected(R"(round_robin_lb_config { slow_start_config {
      slow_start_window { seconds: 10 } aggression { runtime_key: "k" } } })",
                 "round_robin_lb_config.slow_start_config.aggression.runtime_key");
  expectRejected(R"(round_robin_lb_config { slow_start_config {
      slow_start_window { seconds: 10 } aggression { default_value: 0 } } })",
                 "round_robin_lb_config.slow_start_config.aggression");
  expectRejected(R"(lb_policy: LEAST_REQUEST least_request_lb_config { slow_start_config {
      slow_start_window { seconds: 10 } min_weight_percent { value: 150 } } })",
                 "least_request_lb_config.slow_start_config.min_weight_percent");
}

TEST(TranslateUpstreamPolicies, CircuitBreakersDefaultPriorityOnly) {
  auto defaults = cluster("");
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->circuit_breakers.max_connections, 1024u);
  EXPECT_EQ(defaults->circuit_breakers.max_pending_requests, 1024u);
  EXPECT_EQ(defaults->circuit_breakers.max_requests, 1024u);
  auto set = cluster(R"(circuit_breakers { thresholds {
      max_connections { value: 2 } max_pending_requests { value: 3 } max_requests { value: 4 } } })");
  ASSERT_TRUE(set) << set.error().describe();
  EXPECT_EQ(set->circuit_breakers.max_connections, 2u);
  EXPECT_EQ(set->circuit_breakers.max_pending_requests, 3u);
  EXPECT_EQ(set->circuit_breakers.max_requests, 4u);
  // HIGH thresholds are accepted (control planes send them) but never apply: routes run at DEFAULT.
  auto high = cluster(R"(circuit_breakers { thresholds { priority: HIGH max_connections { value: 1 } } })");
  ASSERT_TRUE(high) << high.error().describe();
  EXPECT_EQ(high->circuit_breakers.max_connections, 1024u);
  expectRejected(R"(circuit_breakers { per_host_thresholds {} })", "circuit_breakers.per_host_thresholds[0]");
  expectRejected(R"(circuit_breakers { thresholds {} thresholds {} })", "circuit_breakers.thresholds[1].priority");
}

TEST(TranslateUpstreamPolicies, OutlierDetection) {
  EXPECT_FALSE(cluster("")->outlier_detection);
  auto od = cluster(R"(outlier_detection {
      consecutive_5xx { value: 3 } interval { nanos: 200000000 } base_ejection_time { seconds: 1 }
      max_ejection_percent { value: 50 } max_ejection_time { seconds: 5 }
      split_external_local_origin_errors: true consecutive_local_origin_failure { value: 2 }
      enforcing_failure_percentage { value: 100 } failure_percentage_threshold { value: 60 } })");
  ASSERT_TRUE(od) << od.error().describe();
  ASSERT_TRUE(od->outlier_detection);
  EXPECT_EQ(od->outlier_detection->consecutive_5xx, 3u);
  EXPECT_EQ(od->outlier_detection->interval, std::chrono::milliseconds(200));
  EXPECT_EQ(od->outlier_detection->base_ejection_time, std::chrono::milliseconds(1000));
  EXPECT_EQ(od->outlier_detection->max_ejection_time, std::chrono::milliseconds(5000));
  EXPECT_EQ(od->outlier_detection->max_ejection_percent, 50u);
  EXPECT_TRUE(od->outlier_detection->split_external_local_origin_errors);
  EXPECT_EQ(od->outlier_detection->consecutive_local_origin_failure, 2u);
  EXPECT_EQ(od->outlier_detection->enforcing_failure_percentage, 100u);
  EXPECT_EQ(od->outlier_detection->failure_percentage_threshold, 60u);
  EXPECT_EQ(od->outlier_detection->consecutive_gateway_failure, 5u);  // Envoy's default
  expectRejected(R"(outlier_detection { interval {} })", "outlier_detection.interval");
  expectRejected(R"(outlier_detection { max_ejection_percent { value: 101 } })", "outlier_detection.max_ejection_percent");
  // Fields culvert does not define (here enforcing_local_origin_success_rate, 15) stay rejected.
  Cluster unknown = parse<Cluster>(R"(name: "c" outlier_detection {})");
  unknown.mutable_outlier_detection()->GetReflection()->MutableUnknownFields(unknown.mutable_outlier_detection())->AddVarint(15, 1);
  auto r = translateCluster(unknown);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().where, "outlier_detection");
}

TEST(TranslateUpstreamPolicies, ClusterExtensionsLatencyEjection) {
  Cluster proto = parse<Cluster>(R"(name: "c" outlier_detection { interval { seconds: 1 } })");
  culvert::v1::ClusterExtensions ext;
  ext.mutable_latency_ejection()->set_multiple(3);
  ext.mutable_latency_ejection()->set_minimum_hosts(2);
  (*proto.mutable_typed_extension_protocol_options())["culvert.v1.ClusterExtensions"].PackFrom(ext);
  auto out = translateCluster(proto);
  ASSERT_TRUE(out) << out.error().describe();
  EXPECT_DOUBLE_EQ(out->outlier_detection->latency_ejection_multiple, 3);
  EXPECT_EQ(out->outlier_detection->latency_ejection_minimum_hosts, 2u);
  EXPECT_EQ(out->outlier_detection->latency_ejection_request_volume, 10u);

  Cluster no_od = parse<Cluster>(R"(name: "c")");
  (*no_od.mutable_typed_extension_protocol_options())["culvert.v1.ClusterExtensions"].PackFrom(ext);
  auto r = translateCluster(no_od);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().where, "typed_extension_protocol_options[\"culvert.v1.ClusterExtensions\"].latency_ejection");

  ext.mutable_latency_ejection()->set_multiple(0.5);
  (*proto.mutable_typed_extension_protocol_options())["culvert.v1.ClusterExtensions"].PackFrom(ext);
  r = translateCluster(proto);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().where, "typed_extension_protocol_options[\"culvert.v1.ClusterExtensions\"].latency_ejection.multiple");
}

TEST(TranslateUpstreamPolicies, HashPolicies) {
  auto out = translateHashPolicies(parse<RouteAction>(R"(cluster: "c"
      hash_policy { header { header_name: "X-User" } terminal: true }
      hash_policy { cookie { name: "session" } }
      hash_policy { connection_properties { source_ip: true } })"));
  ASSERT_TRUE(out) << out.error().describe();
  ASSERT_EQ(out->size(), 3u);
  EXPECT_EQ((*out)[0].kind, config::HashPolicy::Kind::Header);
  EXPECT_EQ((*out)[0].name, "x-user");
  EXPECT_TRUE((*out)[0].terminal);
  EXPECT_EQ((*out)[1].kind, config::HashPolicy::Kind::Cookie);
  EXPECT_EQ((*out)[1].name, "session");
  EXPECT_EQ((*out)[2].kind, config::HashPolicy::Kind::SourceIp);
  auto ttl = translateHashPolicies(parse<RouteAction>(R"(hash_policy { cookie { name: "s" ttl { seconds: 1 } } })"));
  ASSERT_FALSE(ttl);
  EXPECT_EQ(ttl.error().where, "hash_policy[0].cookie.ttl");
  auto empty = translateHashPolicies(parse<RouteAction>(R"(hash_policy { terminal: true })"));
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().where, "hash_policy[0]");
}

TEST(TranslateUpstreamPolicies, LocalityWeightedLbConfig) {
  auto off = cluster("");
  ASSERT_TRUE(off);
  EXPECT_FALSE(off->locality_weighted);
  for (const char* policy : {"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"}) {
    auto on = cluster(std::string("lb_policy: ") + policy + " common_lb_config { locality_weighted_lb_config {} }");
    ASSERT_TRUE(on) << on.error().describe();
    EXPECT_TRUE(on->locality_weighted);
  }
  auto eds = translateCluster(parse<Cluster>(R"(name: "c" type: EDS eds_cluster_config { service_name: "svc" }
      common_lb_config { locality_weighted_lb_config {} })"));
  ASSERT_TRUE(eds) << eds.error().describe();
  EXPECT_TRUE(eds->locality_weighted);
  // RING_HASH and MAGLEV fold the locality weights into their ring or table.
  for (const char* policy : {"RING_HASH", "MAGLEV"}) {
    auto on = cluster(std::string("lb_policy: ") + policy + " common_lb_config { locality_weighted_lb_config {} }");
    ASSERT_TRUE(on) << on.error().describe();
    EXPECT_TRUE(on->locality_weighted);
  }
  // DNS clusters: each resolved address has its entry's locality (dns_translate_test).
  auto dns = translateCluster(parse<Cluster>(R"(name: "c" type: STRICT_DNS common_lb_config { locality_weighted_lb_config {} }
      load_assignment { endpoints { lb_endpoints { endpoint { address { socket_address { address: "svc.local" port_value: 80 } } } } } })"));
  ASSERT_TRUE(dns) << dns.error().describe();
  EXPECT_TRUE(dns->locality_weighted);
}

TEST(TranslateUpstreamPolicies, EndpointLocalities) {
  auto out = translateClusterLoadAssignment(parse<ClusterLoadAssignment>(R"(
    endpoints { locality { zone: "a" } load_balancing_weight { value: 3 }
      lb_endpoints { endpoint { address { socket_address { address: "10.0.0.1" port_value: 80 } } } }
      lb_endpoints { health_status: UNHEALTHY endpoint { address { socket_address { address: "10.0.0.2" port_value: 80 } } } } }
    endpoints { locality { zone: "b" } priority: 1
      lb_endpoints { endpoint { address { socket_address { address: "10.0.1.1" port_value: 80 } } } } })"));
  ASSERT_TRUE(out) << out.error().describe();
  ASSERT_EQ(out->localities.size(), 2u);
  // The UNHEALTHY host is no endpoint but still counts in its locality's size.
  EXPECT_EQ(out->localities[0], (config::Locality{3, 0, 2}));
  EXPECT_EQ(out->localities[1], (config::Locality{0, 1, 1}));  // no weight
  ASSERT_EQ(out->endpoints.size(), 2u);
  EXPECT_EQ(out->endpoints[0].locality, 0u);
  EXPECT_EQ(out->endpoints[1].locality, 1u);
  // As Envoy: entries naming the same locality at one priority are one locality (the last
  // weight wins); the same name at another priority is another; an entry without
  // `locality` records no weight.
  auto grouped = translateClusterLoadAssignment(parse<ClusterLoadAssignment>(R"(
    endpoints { locality { zone: "a" } load_balancing_weight { value: 3 }
      lb_endpoints { endpoint { address { socket_address { address: "10.0.0.1" port_value: 80 } } } } }
    endpoints { locality { zone: "a" } priority: 1 load_balancing_weight { value: 4 }
      lb_endpoints { endpoint { address { socket_address { address: "10.0.0.2" port_value: 80 } } } } }
    endpoints { locality { zone: "a" } load_balancing_weight { value: 5 }
      lb_endpoints { endpoint { address { socket_address { address: "10.0.0.3" port_value: 80 } } } } }
    endpoints { load_balancing_weight { value: 6 }
      lb_endpoints { endpoint { address { socket_address { address: "10.0.0.4" port_value: 80 } } } } })"));
  ASSERT_TRUE(grouped) << grouped.error().describe();
  ASSERT_EQ(grouped->localities.size(), 3u);
  EXPECT_EQ(grouped->localities[0], (config::Locality{5, 0, 2}));
  EXPECT_EQ(grouped->localities[1], (config::Locality{4, 1, 1}));
  EXPECT_EQ(grouped->localities[2], (config::Locality{0, 0, 1}));
  ASSERT_EQ(grouped->endpoints.size(), 4u);
  EXPECT_EQ(grouped->endpoints[2].locality, 0u);
  EXPECT_EQ(grouped->endpoints[3].locality, 2u);
  auto zero = translateClusterLoadAssignment(parse<ClusterLoadAssignment>(R"(
    endpoints { load_balancing_weight { value: 0 } })"));
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().where, "endpoints[0].load_balancing_weight");
  auto overflow = translateClusterLoadAssignment(parse<ClusterLoadAssignment>(R"(
    endpoints { load_balancing_weight { value: 4000000000 } }
    endpoints { priority: 1 load_balancing_weight { value: 4000000000 } }
    endpoints { load_balancing_weight { value: 300000000 } })"));
  ASSERT_FALSE(overflow);
  EXPECT_EQ(overflow.error().where, "endpoints[2].load_balancing_weight");
}

TEST(TranslateUpstreamPolicies, EndpointPriorities) {
  auto out = translateClusterLoadAssignment(parse<ClusterLoadAssignment>(R"(
    endpoints { priority: 1 lb_endpoints { endpoint { address { socket_address { address: "10.0.0.2" port_value: 80 } } } } }
    endpoints { lb_endpoints { endpoint { address { socket_address { address: "10.0.0.1" port_value: 80 } } } } })"));
  ASSERT_TRUE(out) << out.error().describe();
  ASSERT_EQ(out->endpoints.size(), 2u);
  EXPECT_EQ(out->endpoints[0].priority, 1u);
  EXPECT_EQ(out->endpoints[1].priority, 0u);
  auto gap = translateClusterLoadAssignment(parse<ClusterLoadAssignment>(R"(
    endpoints { lb_endpoints { endpoint { address { socket_address { address: "10.0.0.1" port_value: 80 } } } } }
    endpoints { priority: 2 lb_endpoints { endpoint { address { socket_address { address: "10.0.0.2" port_value: 80 } } } } })"));
  ASSERT_FALSE(gap);
  EXPECT_EQ(gap.error().where, "endpoints");
}

}  // namespace
}  // namespace culvert::xds::translate

namespace culvert::xds::translate {
namespace {

TEST(TranslateUpstreamPolicies, HealthChecks) {
  auto http = cluster(R"(health_checks {
      timeout { nanos: 200000000 } interval { seconds: 1 } interval_jitter { nanos: 100000000 }
      unhealthy_threshold { value: 2 } healthy_threshold { value: 3 }
      http_health_check { path: "/healthz" host: "svc.local" expected_statuses { start: 200 end: 300 } } })");
  ASSERT_TRUE(http) << http.error().describe();
  ASSERT_TRUE(http->health_check);
  const auto& hc = *http->health_check;
  EXPECT_EQ(hc.kind, config::HealthCheck::Kind::Http);
  EXPECT_EQ(hc.timeout, std::chrono::milliseconds(200));
  EXPECT_EQ(hc.interval, std::chrono::milliseconds(1000));
  EXPECT_EQ(hc.interval_jitter, std::chrono::milliseconds(100));
  EXPECT_EQ(hc.unhealthy_threshold, 2u);
  EXPECT_EQ(hc.healthy_threshold, 3u);
  EXPECT_EQ(hc.path, "/healthz");
  EXPECT_EQ(hc.host, "svc.local");
  EXPECT_EQ(hc.expected_statuses, (std::vector<std::pair<uint32_t, uint32_t>>{{200, 300}}));

  auto tcp = cluster(R"(health_checks { timeout { seconds: 1 } interval { seconds: 1 }
      unhealthy_threshold { value: 1 } healthy_threshold { value: 1 } tcp_health_check {} })");
  ASSERT_TRUE(tcp) << tcp.error().describe();
  EXPECT_EQ(tcp->health_check->kind, config::HealthCheck::Kind::Tcp);

  const std::string base = R"(timeout { seconds: 1 } interval { seconds: 1 } unhealthy_threshold { value: 1 } healthy_threshold { value: 1 } )";
  expectRejected("health_checks { " + base + "}", "health_checks[0]");
  expectRejected(R"(health_checks { interval { seconds: 1 } unhealthy_threshold { value: 1 } healthy_threshold { value: 1 } tcp_health_check {} })",
                 "health_checks[0].timeout");
  expectRejected("health_checks { " + base + "tcp_health_check { send { text: \"ping\" } } }", "health_checks[0].tcp_health_check");
  expectRejected("health_checks { " + base + "http_health_check { path: \"x\" } }", "health_checks[0].http_health_check.path");
  expectRejected("health_checks { " + base + "http_health_check { path: \"/\" expected_statuses { start: 300 end: 200 } } }",
                 "health_checks[0].http_health_check.expected_statuses[0]");
  expectRejected("health_checks { " + base + "tcp_health_check {} } health_checks { " + base + "tcp_health_check {} }",
                 "health_checks[1]");
}

}  // namespace
}  // namespace culvert::xds::translate
