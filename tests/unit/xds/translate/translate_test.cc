#include "xds/translate/translate.h"

#include <google/protobuf/text_format.h>
#include <google/protobuf/unknown_field_set.h>
#include <gtest/gtest.h>

#include <functional>

#include <string>

#include "xds/proto/envoy/config/cluster/v3/cluster.pb.h"
#include "xds/proto/envoy/config/endpoint/v3/endpoint.pb.h"
#include "xds/proto/envoy/config/listener/v3/listener.pb.h"
#include "xds/proto/envoy/config/route/v3/route.pb.h"
#include "xds/proto/envoy/extensions/filters/http/router/v3/router.pb.h"
#include "xds/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb.h"

namespace culvert::xds::translate {
namespace {

using envoy::config::cluster::v3::Cluster;
using envoy::config::endpoint::v3::ClusterLoadAssignment;
using envoy::config::listener::v3::Listener;
using envoy::config::route::v3::RouteConfiguration;
using envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;

template <typename T>
T parse(const std::string& text) {
  T out;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &out)) << text;
  return out;
}

constexpr const char* kRouter = R"(
  http_filters {
    name: "envoy.filters.http.router"
    typed_config {
      [type.googleapis.com/envoy.extensions.filters.http.router.v3.Router] {}
    }
  })";

std::string hcm(const std::string& body) {
  return R"(
    filter_chains {
      filters {
        name: "envoy.filters.network.http_connection_manager"
        typed_config {
          [type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager] {
            stat_prefix: "vip"
            )" +
         body + R"(
          }
        }
      }
    })";
}

const std::string kInlineRoute = R"(
  route_config {
    name: "routes"
    virtual_hosts {
      name: "vh"
      domains: "Example.COM"
      domains: "*"
      routes { match { prefix: "/" } route { cluster: "backend" } }
    }
  })";

std::string listener(const std::string& extra, const std::string& hcm_body = kInlineRoute + kRouter) {
  return R"(name: "vip" address { socket_address { address: "10.96.0.10" port_value: 80 } } )" + extra +
         hcm(hcm_body);
}

TEST(TranslateListener, VirtualListenerWithInlineRoute) {
  auto out = translateListener(parse<Listener>(listener("bind_to_port { value: false }")));
  ASSERT_TRUE(out) << out.error().describe();
  EXPECT_EQ(out->name, "vip");
  EXPECT_FALSE(out->bind_to_port);
  EXPECT_EQ(out->address.toString(), "10.96.0.10:80");
  ASSERT_EQ(out->filter_chains.size(), 1u);
  const auto& http = out->filter_chains[0].http;
  EXPECT_EQ(http.stat_prefix, "vip");
  EXPECT_EQ(http.route_config_name, "routes");
  ASSERT_NE(http.route_config, nullptr);
  ASSERT_EQ(http.route_config->virtual_hosts.size(), 1u);
  const auto& vh = http.route_config->virtual_hosts[0];
  EXPECT_EQ(vh.domains, (std::vector<std::string>{"example.com", "*"}));
  ASSERT_EQ(vh.routes.size(), 1u);
  EXPECT_EQ(vh.routes[0].match.prefix, "/");
  ASSERT_TRUE(vh.routes[0].route);
  EXPECT_EQ(vh.routes[0].route->cluster, "backend");
  EXPECT_EQ(vh.routes[0].route->timeout, std::chrono::seconds(15));
}

TEST(TranslateListener, BindsByDefault) {
  auto out = translateListener(parse<Listener>(listener("")));
  ASSERT_TRUE(out) << out.error().describe();
  EXPECT_TRUE(out->bind_to_port);
}

TEST(TranslateListener, FilterChainMatch) {
  auto text = R"(name: "l" address { socket_address { address: "0.0.0.0" port_value: 443 } }
    bind_to_port { value: false }
    filter_chains {
      filter_chain_match {
        destination_port { value: 443 }
        prefix_ranges { address_prefix: "10.96.0.0" prefix_len { value: 16 } }
        server_names: "API.example.com"
        transport_protocol: "tls"
      }
    )" + hcm(kInlineRoute + kRouter).substr(hcm("").find("filters {"));
  auto out = translateListener(parse<Listener>(text));
  ASSERT_TRUE(out) << out.error().describe();
  const auto& m = out->filter_chains[0].match;
  EXPECT_EQ(m.destination_port, 443);
  ASSERT_EQ(m.prefix_ranges.size(), 1u);
  EXPECT_EQ(m.prefix_ranges[0].length, 16u);
  EXPECT_EQ(m.server_names, std::vector<std::string>{"api.example.com"});
  EXPECT_EQ(m.transport_protocol, "tls");
}

TEST(TranslateListener, RdsLeavesRouteConfigUnresolved) {
  auto out = translateListener(
      parse<Listener>(listener("", R"(rds { config_source { ads {} } route_config_name: "shared" })" +
                                       std::string(kRouter))));
  ASSERT_TRUE(out) << out.error().describe();
  EXPECT_EQ(out->filter_chains[0].http.route_config_name, "shared");
  EXPECT_EQ(out->filter_chains[0].http.route_config, nullptr);
}

void expectRejected(const common::Result<config::Listener>& r, const std::string& where) {
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().where, where) << r.error().describe();
  EXPECT_FALSE(r.error().message.empty());
}

TEST(TranslateListener, RejectsMissingName) {
  auto proto = parse<Listener>(listener(""));
  proto.clear_name();
  expectRejected(translateListener(proto), "name");
}

TEST(TranslateListener, RejectsUseOriginalDst) {
  expectRejected(translateListener(parse<Listener>(listener("use_original_dst { value: true }"))),
                 "use_original_dst");
  // false asks for nothing culvert lacks.
  EXPECT_TRUE(translateListener(parse<Listener>(listener("use_original_dst { value: false }"))));
}

TEST(TranslateListener, RejectsHostnameAddress) {
  auto proto = parse<Listener>(listener(""));
  proto.mutable_address()->mutable_socket_address()->set_address("svc.example.com");
  expectRejected(translateListener(proto), "address.socket_address.address");
}

TEST(TranslateListener, RejectsVirtualListenerWithoutPort) {
  auto proto = parse<Listener>(listener("bind_to_port { value: false }"));
  proto.mutable_address()->mutable_socket_address()->set_port_value(0);
  expectRejected(translateListener(proto), "address.socket_address.port_value");
}

TEST(TranslateListener, RejectsUnknownNetworkFilter) {
  auto proto = parse<Listener>(listener(""));
  auto* filter = proto.mutable_filter_chains(0)->mutable_filters(0);
  filter->set_name("envoy.filters.network.redis_proxy");
  filter->mutable_typed_config()->set_type_url(
      "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy");
  auto r = translateListener(proto);
  expectRejected(r, "filter_chains[0].filters[0].typed_config");
  EXPECT_NE(r.error().message.find("redis_proxy"), std::string::npos);
}

std::string tcpProxyListener(const std::string& tcp_body) {
  return R"(name: "db" address { socket_address { address: "10.96.0.20" port_value: 5432 } }
    bind_to_port { value: false }
    filter_chains {
      filter_chain_match { server_names: "db.example.com" transport_protocol: "tls" }
      filters {
        name: "envoy.filters.network.tcp_proxy"
        typed_config {
          [type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy] {)" +
         tcp_body + R"(}
        }
      }
    })";
}

TEST(TranslateListener, TcpProxyChain) {
  auto out = translateListener(parse<Listener>(tcpProxyListener(R"(stat_prefix: "db" cluster: "pg" idle_timeout { seconds: 30 })")));
  ASSERT_TRUE(out) << out.error().describe();
  ASSERT_EQ(out->filter_chains.size(), 1u);
  const auto& chain = out->filter_chains[0];
  EXPECT_FALSE(chain.isHttp());
  ASSERT_TRUE(chain.tcp_proxy);
  EXPECT_EQ(chain.tcp_proxy->cluster, "pg");
  EXPECT_EQ(chain.tcp_proxy->idle_timeout, std::chrono::seconds(30));
  EXPECT_EQ(chain.match.server_names, std::vector<std::string>{"db.example.com"});
  EXPECT_EQ(chain.match.transport_protocol, "tls");
  auto defaults = translateListener(parse<Listener>(tcpProxyListener(R"(stat_prefix: "db" cluster: "pg")")));
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->filter_chains[0].tcp_proxy->idle_timeout, std::chrono::hours(1));
}

TEST(TranslateListener, TcpProxyRejections) {
  expectRejected(translateListener(parse<Listener>(tcpProxyListener(R"(cluster: "pg")"))),
                 "filter_chains[0].filters[0].typed_config.stat_prefix");
  expectRejected(translateListener(parse<Listener>(tcpProxyListener(R"(stat_prefix: "db")"))),
                 "filter_chains[0].filters[0].typed_config.cluster");
}

TEST(TranslateListener, RejectsSecondNetworkFilter) {
  auto proto = parse<Listener>(listener(""));
  *proto.mutable_filter_chains(0)->add_filters() = proto.filter_chains(0).filters(0);
  expectRejected(translateListener(proto), "filter_chains[0].filters[1]");
}

TEST(TranslateListener, RejectsUnknownHttpFilterUnlessOptional) {
  auto unknown = [](bool optional) {
    return std::string(R"(http_filters { name: "envoy.filters.http.fault" typed_config { type_url: "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault" } )") +
           (optional ? "is_optional: true" : "") + " }";
  };
  expectRejected(translateListener(parse<Listener>(listener("", kInlineRoute + unknown(false) + kRouter))),
                 "filter_chains[0].filters[0].typed_config.http_filters[0]");
  auto ok = translateListener(parse<Listener>(listener("", kInlineRoute + unknown(true) + kRouter)));
  EXPECT_TRUE(ok) << ok.error().describe();
}

TEST(TranslateListener, RejectsMissingRouter) {
  expectRejected(translateListener(parse<Listener>(listener("", kInlineRoute))),
                 "filter_chains[0].filters[0].typed_config.http_filters");
}

TEST(TranslateListener, RejectsRouterOptions) {
  auto proto = parse<Listener>(listener(""));
  HttpConnectionManager config;
  ASSERT_TRUE(proto.filter_chains(0).filters(0).typed_config().UnpackTo(&config));
  envoy::extensions::filters::http::router::v3::Router router;
  router.GetReflection()->MutableUnknownFields(&router)->AddVarint(4, 1);  // suppress_envoy_headers
  config.mutable_http_filters(0)->mutable_typed_config()->PackFrom(router);
  proto.mutable_filter_chains(0)->mutable_filters(0)->mutable_typed_config()->PackFrom(config);
  expectRejected(translateListener(proto), "filter_chains[0].filters[0].typed_config.http_filters[0].typed_config");
}

TEST(TranslateListener, RejectsFieldsCulvertDoesNotDefine) {
  // Over the wire, a field outside culvert's subset arrives as an unknown field.
  auto proto = parse<Listener>(listener(""));
  proto.GetReflection()->MutableUnknownFields(&proto)->AddVarint(30, 1);  // enable_mptcp
  auto r = translateListener(proto);
  expectRejected(r, "");
  EXPECT_NE(r.error().message.find("field number 30"), std::string::npos);

  auto nested = parse<Listener>(listener(""));
  auto* chain = nested.mutable_filter_chains(0);
  chain->GetReflection()->MutableUnknownFields(chain)->AddVarint(4, 1);  // use_proxy_proto
  expectRejected(translateListener(nested), "filter_chains[0]");
}

TEST(TranslateListener, RejectsDuplicateFilterChainMatch) {
  auto proto = parse<Listener>(listener(""));
  *proto.add_filter_chains() = proto.filter_chains(0);
  expectRejected(translateListener(proto), "filter_chains[1].filter_chain_match");
}

TEST(TranslateListener, CodecTypes) {
  auto http3 = parse<Listener>(listener("", "codec_type: HTTP3 " + kInlineRoute + kRouter));
  expectRejected(translateListener(http3), "filter_chains[0].filters[0].typed_config.codec_type");
  auto http2 = translateListener(parse<Listener>(listener("", "codec_type: HTTP2 " + kInlineRoute + kRouter)));
  ASSERT_TRUE(http2) << http2.error().describe();
  EXPECT_EQ(http2->filter_chains[0].http.codec_type, config::HttpConnectionManager::CodecType::Http2);
  auto http1 = translateListener(parse<Listener>(listener("", "codec_type: HTTP1 " + kInlineRoute + kRouter)));
  ASSERT_TRUE(http1) << http1.error().describe();
  EXPECT_EQ(http1->filter_chains[0].http.codec_type, config::HttpConnectionManager::CodecType::Http1);
}

TEST(TranslateRouteConfiguration, MatchersActionsAndTimeouts) {
  auto out = translateRouteConfiguration(parse<RouteConfiguration>(R"(
    name: "r"
    virtual_hosts {
      name: "a"
      domains: "*.Example.com"
      routes {
        name: "exact"
        match {
          path: "/Health"
          case_sensitive { value: false }
          headers { name: "X-Canary" exact_match: "1" }
          headers { name: "x-debug" present_match: false }
          headers { name: "x-trace" }
        }
        route { cluster: "c" prefix_rewrite: "/v2" host_rewrite_literal: "b.internal" timeout { seconds: 2 nanos: 500000000 } }
      }
      routes { match { prefix: "/" } direct_response { status: 404 body { inline_string: "nope" } } }
    })"));
  ASSERT_TRUE(out) << out.error().describe();
  const auto& vh = out->virtual_hosts[0];
  EXPECT_EQ(vh.domains, std::vector<std::string>{"*.example.com"});
  const auto& r0 = vh.routes[0];
  EXPECT_EQ(r0.match.path, "/Health");
  EXPECT_FALSE(r0.match.prefix);
  EXPECT_FALSE(r0.match.case_sensitive);
  ASSERT_EQ(r0.match.headers.size(), 3u);
  EXPECT_EQ(r0.match.headers[0].name, "x-canary");
  ASSERT_TRUE(r0.match.headers[0].string_match);
  EXPECT_EQ(r0.match.headers[0].string_match->kind, config::StringMatcher::Kind::Exact);
  EXPECT_EQ(r0.match.headers[0].string_match->value, "1");
  // present_match: false means "absent": present + inverted.
  EXPECT_TRUE(r0.match.headers[1].present_match);
  EXPECT_TRUE(r0.match.headers[1].invert_match);
  EXPECT_TRUE(r0.match.headers[2].present_match);
  EXPECT_FALSE(r0.match.headers[2].invert_match);
  ASSERT_TRUE(r0.route);
  EXPECT_EQ(r0.route->prefix_rewrite, "/v2");
  EXPECT_EQ(r0.route->host_rewrite_literal, "b.internal");
  EXPECT_EQ(r0.route->timeout, std::chrono::milliseconds(2500));
  ASSERT_TRUE(vh.routes[1].direct_response);
  EXPECT_EQ(vh.routes[1].direct_response->status, 404u);
  EXPECT_EQ(vh.routes[1].direct_response->body, "nope");
}

void expectRouteRejected(const std::string& text, const std::string& where) {
  auto r = translateRouteConfiguration(parse<RouteConfiguration>(text));
  ASSERT_FALSE(r) << text;
  EXPECT_EQ(r.error().where, where) << r.error().describe();
}

TEST(TranslateRouteConfiguration, Rejections) {
  expectRouteRejected(R"(virtual_hosts { name: "a" domains: "*" routes { match { prefix: "/" } } })",
                      "virtual_hosts[0].routes[0]");
  expectRouteRejected(R"(virtual_hosts { name: "a" domains: "*" routes { route { cluster: "c" } } })",
                      "virtual_hosts[0].routes[0].match");
  expectRouteRejected(R"(virtual_hosts { name: "a" domains: "*" routes { match { prefix: "/" } route { } } })",
                      "virtual_hosts[0].routes[0].route.cluster");
  expectRouteRejected(R"(virtual_hosts { name: "a" domains: "A.com" } virtual_hosts { name: "b" domains: "a.com" })",
                      "virtual_hosts[1].domains[0]");
  expectRouteRejected(R"(virtual_hosts { name: "a" domains: "a.*.com" })", "virtual_hosts[0].domains[0]");
  expectRouteRejected(R"(virtual_hosts { name: "a" })", "virtual_hosts[0].domains");
  expectRouteRejected(R"(virtual_hosts { name: "a" domains: "*" require_tls: ALL })", "virtual_hosts[0].require_tls");
  expectRouteRejected(
      R"(virtual_hosts { name: "a" domains: "*" routes { match { prefix: "/" } direct_response { status: 200 body { filename: "/etc/passwd" } } } })",
      "virtual_hosts[0].routes[0].direct_response.body.filename");
}

TEST(TranslateRouteConfiguration, RegexMatchersAndQueryParameters) {
  auto out = translateRouteConfiguration(parse<RouteConfiguration>(R"pb(
    virtual_hosts {
      name: "a" domains: "*"
      routes {
        match {
          safe_regex { google_re2 {} regex: "/users/[0-9]+" }
          headers { name: "x-v" safe_regex_match { regex: "v[12]" } }
          headers { name: "x-n" range_match { start: 1 end: 10 } }
          headers { name: "x-s" string_match { prefix: "AB" ignore_case: true } }
          headers { name: "x-c" contains_match: "mid" }
          query_parameters { name: "debug" string_match { exact: "1" } }
          query_parameters { name: "flag" present_match: true }
        }
        route { cluster: "c" regex_rewrite { pattern { regex: "^/users/([0-9]+)" } substitution: "/u/\\1" } }
      }
    })pb"));
  ASSERT_TRUE(out) << out.error().describe();
  const auto& m = out->virtual_hosts[0].routes[0].match;
  ASSERT_TRUE(m.safe_regex);
  EXPECT_TRUE(m.safe_regex->fullMatch("/users/42"));
  EXPECT_FALSE(m.safe_regex->fullMatch("/users/42/x"));
  ASSERT_EQ(m.headers.size(), 4u);
  EXPECT_EQ(m.headers[0].string_match->kind, config::StringMatcher::Kind::Regex);
  EXPECT_EQ(m.headers[1].range_match->start, 1);
  EXPECT_EQ(m.headers[1].range_match->end, 10);
  EXPECT_EQ(m.headers[2].string_match->value, "ab");  // lowered for ignore_case
  EXPECT_EQ(m.headers[3].string_match->kind, config::StringMatcher::Kind::Contains);
  ASSERT_EQ(m.query_parameters.size(), 2u);
  EXPECT_EQ(m.query_parameters[0].string_match->value, "1");
  EXPECT_FALSE(m.query_parameters[1].string_match);
  const auto& rw = out->virtual_hosts[0].routes[0].route->regex_rewrite;
  ASSERT_TRUE(rw);
  EXPECT_EQ(rw->pattern->replaceAll("/users/7", rw->substitution), "/u/7");
}

TEST(TranslateRouteConfiguration, WeightedClustersAndHeaderMutations) {
  auto out = translateRouteConfiguration(parse<RouteConfiguration>(R"(
    request_headers_to_add { header { key: "X-Global" value: "g" } append_action: OVERWRITE_IF_EXISTS_OR_ADD }
    response_headers_to_remove: "Server"
    virtual_hosts {
      name: "a" domains: "*"
      request_headers_to_add { header { key: "x-vh" value: "100%%" } append { value: false } }
      routes {
        match { prefix: "/" }
        request_headers_to_remove: "x-drop"
        response_headers_to_add { header { key: "x-route" value: "" } keep_empty_value: true append_action: ADD_IF_ABSENT }
        route { weighted_clusters {
          clusters { name: "a" weight { value: 30 } request_headers_to_add { header { key: "x-w" value: "a" } } }
          clusters { name: "b" weight { value: 70 } }
          total_weight { value: 100 }
        } }
      }
    })"));
  ASSERT_TRUE(out) << out.error().describe();
  using Action = config::HeaderValueOption::Action;
  ASSERT_EQ(out->headers.request_headers_to_add.size(), 1u);
  EXPECT_EQ(out->headers.request_headers_to_add[0].name, "x-global");
  EXPECT_EQ(out->headers.request_headers_to_add[0].action, Action::OverwriteIfExistsOrAdd);
  EXPECT_EQ(out->headers.response_headers_to_remove, std::vector<std::string>{"server"});
  const auto& vh = out->virtual_hosts[0];
  EXPECT_EQ(vh.headers.request_headers_to_add[0].value, "100%");
  EXPECT_EQ(vh.headers.request_headers_to_add[0].action, Action::OverwriteIfExistsOrAdd);  // append: false
  const auto& r = vh.routes[0];
  EXPECT_EQ(r.headers.request_headers_to_remove, std::vector<std::string>{"x-drop"});
  EXPECT_TRUE(r.headers.response_headers_to_add[0].keep_empty_value);
  EXPECT_EQ(r.headers.response_headers_to_add[0].action, Action::AddIfAbsent);
  ASSERT_TRUE(r.route->weighted_clusters);
  EXPECT_TRUE(r.route->cluster.empty());
  EXPECT_EQ(r.route->weighted_clusters->total_weight, 100u);
  ASSERT_EQ(r.route->weighted_clusters->clusters.size(), 2u);
  EXPECT_EQ(r.route->weighted_clusters->clusters[0].headers.request_headers_to_add[0].name, "x-w");
}

TEST(TranslateRouteConfiguration, RoutingRejections) {
  const std::string vh = R"(virtual_hosts { name: "a" domains: "*" routes { )";
  // RE2 program size above Envoy's default limit of 100.
  expectRouteRejected(vh + R"(match { safe_regex { regex: "(abc|def|ghi){1,30}" } } route { cluster: "c" } } })",
                      "virtual_hosts[0].routes[0].match.safe_regex.regex");
  expectRouteRejected(vh + R"(match { safe_regex { regex: "(" } } route { cluster: "c" } } })",
                      "virtual_hosts[0].routes[0].match.safe_regex.regex");
  expectRouteRejected(vh + R"(match { prefix: "/" headers { name: "x" range_match { start: 5 end: 5 } } } route { cluster: "c" } } })",
                      "virtual_hosts[0].routes[0].match.headers[0].range_match");
  expectRouteRejected(
      vh + R"(match { prefix: "/" headers { name: "x" string_match { safe_regex { regex: "a" } ignore_case: true } } } route { cluster: "c" } } })",
      "virtual_hosts[0].routes[0].match.headers[0].string_match.ignore_case");
  expectRouteRejected(
      vh + R"(match { prefix: "/" } route { weighted_clusters { clusters { name: "a" weight { value: 1 } } total_weight { value: 2 } } } } })",
      "virtual_hosts[0].routes[0].route.weighted_clusters.total_weight");
  expectRouteRejected(vh + R"(match { prefix: "/" } route { weighted_clusters { clusters { name: "a" } } } } })",
                      "virtual_hosts[0].routes[0].route.weighted_clusters.clusters");
  expectRouteRejected(
      vh + R"(match { prefix: "/" } route { cluster: "c" prefix_rewrite: "/" regex_rewrite { pattern { regex: "a" } } } } })",
      "virtual_hosts[0].routes[0].route.regex_rewrite");
  expectRouteRejected(
      vh + R"(match { prefix: "/" } route { cluster: "c" regex_rewrite { pattern { regex: "a" } substitution: "\\3" } } } })",
      "virtual_hosts[0].routes[0].route.regex_rewrite.substitution");
  expectRouteRejected(
      vh + R"(match { prefix: "/" } request_headers_to_add { header { key: "x" value: "%DOWNSTREAM_REMOTE_ADDRESS%" } } route { cluster: "c" } } })",
      "virtual_hosts[0].routes[0].request_headers_to_add[0].header.value");
  expectRouteRejected(
      vh + R"(match { prefix: "/" } request_headers_to_add { header { key: "x" value: "a\r\nb: c" } } route { cluster: "c" } } })",
      "virtual_hosts[0].routes[0].request_headers_to_add[0].header.value");
  expectRouteRejected(vh + R"(match { prefix: "/" } request_headers_to_remove: "Host" route { cluster: "c" } } })",
                      "virtual_hosts[0].routes[0].request_headers_to_remove[0]");
  expectRouteRejected(
      vh + R"(match { prefix: "/" } request_headers_to_add { header { key: ":path" value: "/x" } } route { cluster: "c" } } })",
      "virtual_hosts[0].routes[0].request_headers_to_add[0].header.key");
  expectRouteRejected(
      vh + R"(match { prefix: "/" } request_headers_to_add { header { key: "x" value: "1" } append { value: true } append_action: ADD_IF_ABSENT } route { cluster: "c" } } })",
      "virtual_hosts[0].routes[0].request_headers_to_add[0].append");
}

constexpr const char* kStaticCluster = R"(
  name: "backend"
  type: STATIC
  connect_timeout { nanos: 250000000 }
  load_assignment {
    cluster_name: "backend"
    endpoints {
      lb_endpoints { endpoint { address { socket_address { address: "10.244.1.2" port_value: 8080 } } } }
      lb_endpoints {
        endpoint { address { socket_address { address: "10.244.1.3" port_value: 8080 } } }
        load_balancing_weight { value: 3 }
      }
      lb_endpoints {
        endpoint { address { socket_address { address: "10.244.1.4" port_value: 8080 } } }
        health_status: UNHEALTHY
      }
    }
  })";

TEST(TranslateCluster, StaticCluster) {
  auto out = translateCluster(parse<Cluster>(kStaticCluster));
  ASSERT_TRUE(out) << out.error().describe();
  EXPECT_EQ(out->name, "backend");
  EXPECT_EQ(out->type, config::ClusterType::Static);
  EXPECT_EQ(out->lb_policy, config::LbPolicy::RoundRobin);
  EXPECT_EQ(out->connect_timeout, std::chrono::milliseconds(250));
  ASSERT_EQ(out->endpoints.size(), 2u);  // the UNHEALTHY one is left out, as Envoy does
  EXPECT_EQ(out->endpoints[0].address.toString(), "10.244.1.2:8080");
  EXPECT_EQ(out->endpoints[0].weight, 1u);
  EXPECT_EQ(out->endpoints[1].weight, 3u);
}

TEST(TranslateCluster, DefaultsAndEds) {
  auto defaults = translateCluster(parse<Cluster>(R"(name: "c")"));
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->connect_timeout, std::chrono::seconds(5));
  auto eds = translateCluster(parse<Cluster>(R"(name: "c" type: EDS eds_cluster_config { eds_config { ads {} } })"));
  ASSERT_TRUE(eds) << eds.error().describe();
  EXPECT_EQ(eds->type, config::ClusterType::Eds);
  EXPECT_EQ(eds->eds_service_name, "c");
  auto named = translateCluster(parse<Cluster>(R"(name: "c" type: EDS eds_cluster_config { service_name: "svc" })"));
  ASSERT_TRUE(named);
  EXPECT_EQ(named->eds_service_name, "svc");
}

void expectClusterRejected(const Cluster& proto, const std::string& where) {
  auto r = translateCluster(proto);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().where, where) << r.error().describe();
}

TEST(TranslateCluster, Rejections) {
  expectClusterRejected(parse<Cluster>(R"(type: STATIC)"), "name");
  expectClusterRejected(parse<Cluster>(R"(name: "c" type: LOGICAL_DNS)"), "load_assignment");
  expectClusterRejected(parse<Cluster>(R"(name: "c" lb_policy: LOAD_BALANCING_POLICY_CONFIG)"), "lb_policy");
  expectClusterRejected(parse<Cluster>(R"(name: "c" connect_timeout {})"), "connect_timeout");
  expectClusterRejected(
      parse<Cluster>(R"(name: "c" typed_extension_protocol_options { key: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" value {} })"),
      "typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"]");
  auto proto = parse<Cluster>(kStaticCluster);
  proto.mutable_load_assignment()
      ->mutable_endpoints(0)
      ->mutable_lb_endpoints(1)
      ->mutable_endpoint()
      ->mutable_address()
      ->mutable_socket_address()
      ->set_address("backend.svc");
  expectClusterRejected(proto, "load_assignment.endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address");
  auto priority = parse<Cluster>(kStaticCluster);
  priority.mutable_load_assignment()->mutable_endpoints(0)->set_priority(1);
  expectClusterRejected(priority, "load_assignment.endpoints");  // priority 1 without a priority 0
}

TEST(TranslateCluster, OriginalDstNeedsClusterProvided) {
  auto ok = translateCluster(parse<Cluster>(R"(name: "passthrough" type: ORIGINAL_DST lb_policy: CLUSTER_PROVIDED)"));
  ASSERT_TRUE(ok) << ok.error().describe();
  EXPECT_EQ(ok->type, config::ClusterType::OriginalDst);
  EXPECT_TRUE(ok->endpoints.empty());
  expectClusterRejected(parse<Cluster>(R"(name: "p" type: ORIGINAL_DST)"), "lb_policy");
  expectClusterRejected(parse<Cluster>(R"(name: "p" type: ORIGINAL_DST lb_policy: CLUSTER_PROVIDED load_assignment { cluster_name: "p" })"),
                        "load_assignment");
}

TEST(TranslateClusterLoadAssignment, Endpoints) {
  auto out = translateClusterLoadAssignment(parse<ClusterLoadAssignment>(R"(
    cluster_name: "svc"
    endpoints { lb_endpoints { endpoint { address { socket_address { address: "::1" port_value: 9000 } } } } }
    endpoints { lb_endpoints { endpoint { address { socket_address { address: "10.0.0.1" port_value: 9000 } } } } })"));
  ASSERT_TRUE(out) << out.error().describe();
  ASSERT_EQ(out->endpoints.size(), 2u);
  EXPECT_EQ(out->endpoints[0].address.toString(), "[::1]:9000");
  auto bad = translateClusterLoadAssignment(parse<ClusterLoadAssignment>(R"(
    endpoints { lb_endpoints { endpoint { address { socket_address { address: "10.0.0.1" } } } } })"));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().where, "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value");
}

// The unknown-field walk caches each message type's fields: a type seen first without
// unknown fields must still be checked on its later instances, at any depth.
TEST(TranslateClusterLoadAssignment, UnknownFieldDeepInALaterEndpointIsRejected) {
  auto cla = parse<ClusterLoadAssignment>(R"(
    cluster_name: "svc"
    endpoints { lb_endpoints { endpoint { address { socket_address { address: "10.0.0.1" port_value: 9000 } } } } }
    endpoints {
      lb_endpoints { endpoint { address { socket_address { address: "10.0.0.2" port_value: 9000 } } } }
      lb_endpoints { endpoint { address { socket_address { address: "10.0.0.3" port_value: 9000 } } } }
    })");
  ASSERT_TRUE(translateClusterLoadAssignment(cla));
  auto* sa = cla.mutable_endpoints(1)->mutable_lb_endpoints(1)->mutable_endpoint()->mutable_address()->mutable_socket_address();
  sa->GetReflection()->MutableUnknownFields(sa)->AddVarint(6, 1);  // ipv4_compat
  auto bad = translateClusterLoadAssignment(cla);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().where, "endpoints[1].lb_endpoints[1].endpoint.address.socket_address");
  EXPECT_NE(bad.error().message.find("field number 6 of envoy.config.core.v3.SocketAddress"), std::string::npos)
      << bad.error().message;
}

// The typed fast path must reject what the reflective walk rejects, at every level, and
// leave what it does not look into (metadata) to that walk.
TEST(TranslateClusterLoadAssignment, UnknownFieldsAtEveryEndpointLevelAreRejected) {
  auto base = parse<ClusterLoadAssignment>(R"(
    cluster_name: "svc"
    endpoints {
      locality { zone: "z1" }
      load_balancing_weight { value: 2 }
      lb_endpoints {
        endpoint { address { socket_address { address: "10.0.0.1" port_value: 9000 } } }
        load_balancing_weight { value: 3 }
        metadata { }
      }
    })");
  ASSERT_TRUE(translateClusterLoadAssignment(base));
  auto addUnknown = [](google::protobuf::Message* m) { m->GetReflection()->MutableUnknownFields(m)->AddVarint(99, 1); };
  struct Case {
    std::string where;
    std::function<google::protobuf::Message*(ClusterLoadAssignment&)> at;
  };
  std::vector<Case> cases = {
      {"", [](auto& c) { return &c; }},
      {"endpoints[0]", [](auto& c) { return c.mutable_endpoints(0); }},
      {"endpoints[0].locality", [](auto& c) { return c.mutable_endpoints(0)->mutable_locality(); }},
      {"endpoints[0].load_balancing_weight", [](auto& c) { return c.mutable_endpoints(0)->mutable_load_balancing_weight(); }},
      {"endpoints[0].lb_endpoints[0]", [](auto& c) { return c.mutable_endpoints(0)->mutable_lb_endpoints(0); }},
      {"endpoints[0].lb_endpoints[0].load_balancing_weight",
       [](auto& c) { return c.mutable_endpoints(0)->mutable_lb_endpoints(0)->mutable_load_balancing_weight(); }},
      {"endpoints[0].lb_endpoints[0].metadata",
       [](auto& c) { return c.mutable_endpoints(0)->mutable_lb_endpoints(0)->mutable_metadata(); }},
      {"endpoints[0].lb_endpoints[0].endpoint",
       [](auto& c) { return c.mutable_endpoints(0)->mutable_lb_endpoints(0)->mutable_endpoint(); }},
      {"endpoints[0].lb_endpoints[0].endpoint.address",
       [](auto& c) { return c.mutable_endpoints(0)->mutable_lb_endpoints(0)->mutable_endpoint()->mutable_address(); }},
  };
  for (const auto& c : cases) {
    auto cla = base;
    addUnknown(c.at(cla));
    auto bad = translateClusterLoadAssignment(cla);
    ASSERT_FALSE(bad) << c.where;
    EXPECT_EQ(bad.error().where, c.where);
    EXPECT_NE(bad.error().message.find("field number 99"), std::string::npos) << bad.error().message;
  }
}

}  // namespace
}  // namespace culvert::xds::translate
