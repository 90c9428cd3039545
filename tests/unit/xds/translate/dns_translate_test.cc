// STRICT_DNS / LOGICAL_DNS clusters: what translate accepts and what it names in a NACK.

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <string>

#include "xds/proto/envoy/config/cluster/v3/cluster.pb.h"
#include "xds/proto/envoy/extensions/network/dns_resolver/cares/v3/cares_dns_resolver.pb.h"
#include "xds/translate/translate.h"

namespace culvert::xds::translate {
namespace {

using envoy::config::cluster::v3::Cluster;
using Family = config::DnsResolution::LookupFamily;
using std::chrono::milliseconds;

constexpr const char* kEndpoints = R"(
  load_assignment {
    cluster_name: "c"
    endpoints {
      lb_endpoints { endpoint { address { socket_address { address: "svc.test" port_value: 8080 } } }
                     load_balancing_weight { value: 3 } }
      lb_endpoints { endpoint { address { socket_address { address: "10.0.0.1" port_value: 80 } } } }
    }
    endpoints {
      priority: 1
      lb_endpoints { endpoint { address { socket_address { address: "backup.test" port_value: 81 } } } }
    }
  })";

constexpr const char* kOneEndpoint = R"(
  load_assignment { cluster_name: "c" endpoints {
    lb_endpoints { endpoint { address { socket_address { address: "svc.test" port_value: 8080 } } } } } })";

common::Result<config::Cluster> dnsCluster(const std::string& type, const std::string& extra,
                                           const std::string& endpoints = kEndpoints) {
  Cluster proto;
  auto text = "name: \"c\" type: " + type + " " + endpoints + " " + extra;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &proto)) << text;
  return translateCluster(proto);
}

void expectRejected(const std::string& type, const std::string& extra, const std::string& where,
                    const std::string& endpoints = kEndpoints) {
  auto r = dnsCluster(type, extra, endpoints);
  ASSERT_FALSE(r) << extra;
  EXPECT_EQ(r.error().where, where) << r.error().describe();
}

TEST(TranslateDnsCluster, TargetsCarryTheirEntrysLocality) {
  // Two entries name zone a (one locality, weighed by the later weight, as Envoy), one
  // zone b, one names none; localities' sizes wait for resolution.
  auto r = dnsCluster("STRICT_DNS", "common_lb_config { locality_weighted_lb_config {} }", R"(
    load_assignment { cluster_name: "c"
      endpoints { locality { zone: "a" } load_balancing_weight { value: 2 }
        lb_endpoints { endpoint { address { socket_address { address: "a1.test" port_value: 80 } } } } }
      endpoints { locality { zone: "b" } load_balancing_weight { value: 1 }
        lb_endpoints { endpoint { address { socket_address { address: "b1.test" port_value: 80 } } } } }
      endpoints { locality { zone: "a" } load_balancing_weight { value: 3 }
        lb_endpoints { endpoint { address { socket_address { address: "a2.test" port_value: 80 } } } } }
      endpoints {
        lb_endpoints { endpoint { address { socket_address { address: "c1.test" port_value: 80 } } } } } })");
  ASSERT_TRUE(r) << r.error().describe();
  ASSERT_TRUE(r->dns);
  const auto& targets = r->dns->targets;
  ASSERT_EQ(targets.size(), 4u);
  EXPECT_EQ(targets[0].locality, 0u);
  EXPECT_EQ(targets[1].locality, 1u);
  EXPECT_EQ(targets[2].locality, 0u);
  EXPECT_EQ(targets[3].locality, 2u);
  ASSERT_EQ(r->localities.size(), 3u);
  EXPECT_EQ(r->localities[0], (config::Locality{3, 0, 0}));
  EXPECT_EQ(r->localities[1], (config::Locality{1, 0, 0}));
  EXPECT_EQ(r->localities[2], (config::Locality{0, 0, 0}));
  // Envoy's validation of locality weights holds here too.
  expectRejected("STRICT_DNS", "", "load_assignment.endpoints[0].load_balancing_weight", R"(
    load_assignment { cluster_name: "c"
      endpoints { locality { zone: "a" } load_balancing_weight { value: 0 }
        lb_endpoints { endpoint { address { socket_address { address: "a1.test" port_value: 80 } } } } } })");
}

TEST(TranslateDnsCluster, StrictDnsDefaultsAsEnvoys) {
  auto r = dnsCluster("STRICT_DNS", "");
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->type, config::ClusterType::StrictDns);
  EXPECT_TRUE(r->endpoints.empty());  // filled in by resolution
  ASSERT_TRUE(r->dns);
  const auto& dns = *r->dns;
  EXPECT_EQ(dns.refresh_rate, milliseconds(5000));
  EXPECT_FALSE(dns.respect_dns_ttl);
  EXPECT_FALSE(dns.failure_base_interval);
  EXPECT_EQ(dns.lookup_family, Family::Auto);
  EXPECT_TRUE(dns.resolvers.empty());  // /etc/resolv.conf
  ASSERT_EQ(dns.targets.size(), 3u);
  EXPECT_EQ(dns.targets[0], (config::DnsResolution::Target{"svc.test", 8080, 3, 0}));
  EXPECT_EQ(dns.targets[1], (config::DnsResolution::Target{"10.0.0.1", 80, 1, 0}));
  EXPECT_EQ(dns.targets[2], (config::DnsResolution::Target{"backup.test", 81, 1, 1, 1}));  // the second entry's locality
}

TEST(TranslateDnsCluster, RefreshRatesTtlAndFamilies) {
  auto r = dnsCluster("STRICT_DNS", R"(dns_refresh_rate { nanos: 250000000 } respect_dns_ttl: true
      dns_failure_refresh_rate { base_interval { nanos: 100000000 } } dns_lookup_family: V4_PREFERRED)");
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->dns->refresh_rate, milliseconds(250));
  EXPECT_TRUE(r->dns->respect_dns_ttl);
  EXPECT_EQ(r->dns->failure_base_interval, milliseconds(100));
  EXPECT_EQ(r->dns->failure_max_interval, milliseconds(1000));  // 10 x base
  EXPECT_EQ(r->dns->lookup_family, Family::V4Preferred);
  for (auto [name, family] : {std::pair{"V4_ONLY", Family::V4Only}, std::pair{"V6_ONLY", Family::V6Only},
                              std::pair{"ALL", Family::All}, std::pair{"AUTO", Family::Auto}}) {
    auto f = dnsCluster("STRICT_DNS", std::string("dns_lookup_family: ") + name);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->dns->lookup_family, family) << name;
  }
  auto max = dnsCluster("LOGICAL_DNS", R"(dns_failure_refresh_rate { base_interval { seconds: 1 } max_interval { seconds: 4 } })",
                        kOneEndpoint);
  ASSERT_TRUE(max) << max.error().describe();
  EXPECT_EQ(max->type, config::ClusterType::LogicalDns);
  EXPECT_EQ(max->dns->failure_max_interval, milliseconds(4000));
}

TEST(TranslateDnsCluster, CaresResolversAndOptions) {
  auto r = dnsCluster("STRICT_DNS", R"(typed_dns_resolver_config {
      name: "envoy.network.dns_resolver.cares"
      typed_config {
        [type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig] {
          resolvers { socket_address { address: "127.0.0.1" port_value: 5353 } }
          resolvers { socket_address { address: "::1" } }
          dns_resolver_options { use_tcp_for_dns_lookups: true no_default_search_domain: true }
        } } })");
  ASSERT_TRUE(r) << r.error().describe();
  ASSERT_EQ(r->dns->resolvers.size(), 2u);
  EXPECT_EQ(r->dns->resolvers[0].toString(), "127.0.0.1:5353");
  EXPECT_EQ(r->dns->resolvers[1].toString(), "[::1]:53");
  EXPECT_TRUE(r->dns->use_tcp);
  EXPECT_TRUE(r->dns->no_default_search_domain);
}

TEST(TranslateDnsCluster, DeprecatedResolverFields) {
  auto r = dnsCluster("STRICT_DNS", R"(dns_resolvers { socket_address { address: "127.0.0.1" port_value: 53 } }
      use_tcp_for_dns_lookups: true)");
  ASSERT_TRUE(r) << r.error().describe();
  ASSERT_EQ(r->dns->resolvers.size(), 1u);
  EXPECT_TRUE(r->dns->use_tcp);
  auto config = dnsCluster("STRICT_DNS", R"(dns_resolution_config {
      resolvers { socket_address { address: "127.0.0.2" port_value: 53 } }
      dns_resolver_options { no_default_search_domain: true } })");
  ASSERT_TRUE(config) << config.error().describe();
  EXPECT_EQ(config->dns->resolvers[0].toString(), "127.0.0.2:53");
  EXPECT_TRUE(config->dns->no_default_search_domain);
}

TEST(TranslateDnsCluster, Rejections) {
  expectRejected("STRICT_DNS", R"(dns_refresh_rate { nanos: 1000000 })", "dns_refresh_rate");
  expectRejected("STRICT_DNS", R"(dns_failure_refresh_rate { max_interval { seconds: 1 } })",
                 "dns_failure_refresh_rate.base_interval");
  expectRejected("STRICT_DNS", R"(dns_failure_refresh_rate { base_interval { seconds: 2 } max_interval { seconds: 1 } })",
                 "dns_failure_refresh_rate.max_interval");
  expectRejected("STRICT_DNS", R"(wait_for_warm_on_init { value: true })", "wait_for_warm_on_init");
  expectRejected("STRICT_DNS", R"(typed_dns_resolver_config { name: "apple" typed_config {
      [type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig] {} } })",
                 "typed_dns_resolver_config.typed_config.resolvers");
  const std::string cares =
      R"(typed_dns_resolver_config { name: "cares" typed_config {
      [type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig] {
        resolvers { socket_address { address: "127.0.0.1" port_value: 53 } } )";
  expectRejected("STRICT_DNS", cares + "use_resolvers_as_fallback: true } } }",
                 "typed_dns_resolver_config.typed_config.use_resolvers_as_fallback");
  expectRejected("STRICT_DNS", cares + "filter_unroutable_families: true } } }",
                 "typed_dns_resolver_config.typed_config.filter_unroutable_families");
  expectRejected("STRICT_DNS", cares + "udp_max_queries { value: 10 } } } }",
                 "typed_dns_resolver_config.typed_config.udp_max_queries");
  expectRejected("STRICT_DNS", R"(dns_resolvers { socket_address { address: "resolver.example" port_value: 53 } })",
                 "dns_resolvers[0].socket_address.address");
  // A LOGICAL_DNS cluster is one logical host.
  expectRejected("LOGICAL_DNS", "", "load_assignment");
  expectRejected("STRICT_DNS", "", "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address",
                 R"(load_assignment { endpoints { lb_endpoints { endpoint { address { socket_address {
                     address: "bad name!" port_value: 80 } } } } } })");
  expectRejected("STRICT_DNS", "", "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value",
                 R"(load_assignment { endpoints { lb_endpoints { endpoint { address { socket_address {
                     address: "svc.test" } } } } } })");
}

TEST(TranslateDnsCluster, OtherClusterTypesIgnoreTheDnsFieldsAsEnvoyDoes) {
  Cluster proto;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      R"(name: "c" type: STATIC dns_refresh_rate { seconds: 1 } dns_lookup_family: V4_ONLY)", &proto));
  auto r = translateCluster(proto);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_FALSE(r->dns);
}

}  // namespace
}  // namespace culvert::xds::translate
