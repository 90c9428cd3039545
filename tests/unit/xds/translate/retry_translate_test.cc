// Retry policies, their buffer limits and the retry circuit breakers.
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <string>

#include "xds/proto/envoy/config/cluster/v3/cluster.pb.h"
#include "xds/proto/envoy/config/listener/v3/listener.pb.h"
#include "xds/proto/envoy/extensions/filters/http/router/v3/router.pb.h"
#include "xds/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb.h"
#include "xds/proto/envoy/config/route/v3/route.pb.h"
#include "xds/translate/translate.h"

namespace culvert::xds::translate {
namespace {

using envoy::config::cluster::v3::Cluster;
using envoy::config::route::v3::RouteConfiguration;
using std::chrono::milliseconds;

template <typename T>
T parse(const std::string& text) {
  T out;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &out)) << text;
  return out;
}

common::Result<config::RouteConfiguration> routesWith(const std::string& vhost_extra, const std::string& route_extra,
                                                      const std::string& action_extra = "") {
  return translateRouteConfiguration(parse<RouteConfiguration>(
      R"(virtual_hosts { name: "a" domains: "*" )" + vhost_extra + R"( routes { match { prefix: "/" } )" +
      route_extra + R"( route { cluster: "c" )" + action_extra + R"( } } })"));
}

TEST(TranslateRetryPolicy, EveryField) {
  auto out = routesWith("", "per_request_buffer_limit_bytes { value: 1024 }", R"(
    retry_policy {
      retry_on: "5xx, gateway-error,reset,connect-failure,refused-stream,retriable-4xx,retriable-status-codes,retriable-headers,cancelled,deadline-exceeded,internal,resource-exhausted,unavailable"
      num_retries { value: 4 }
      per_try_timeout { nanos: 300000000 }
      per_try_idle_timeout { seconds: 1 }
      retry_host_predicate { name: "envoy.retry_host_predicates.previous_hosts" }
      host_selection_retry_max_attempts: 5
      retriable_status_codes: 429
      retriable_headers { name: "X-Retry" exact_match: "1" }
      retry_back_off { base_interval { nanos: 100000000 } }
      rate_limited_retry_back_off {
        reset_headers { name: "Retry-After" }
        reset_headers { name: "X-RateLimit-Reset" format: UNIX_TIMESTAMP }
        max_interval { seconds: 5 }
      }
    })");
  ASSERT_TRUE(out) << out.error().describe();
  const auto& action = *out->virtual_hosts[0].routes[0].route;
  ASSERT_TRUE(action.retry_policy);
  const auto& p = *action.retry_policy;
  EXPECT_EQ(p.retry_on, (1u << 13) - 1);  // all thirteen conditions
  EXPECT_EQ(p.num_retries, 4u);
  EXPECT_EQ(p.per_try_timeout, milliseconds(300));
  EXPECT_EQ(p.per_try_idle_timeout, milliseconds(1000));
  EXPECT_TRUE(p.previous_hosts);
  EXPECT_EQ(p.host_selection_retry_max_attempts, 5u);
  EXPECT_EQ(p.retriable_status_codes, std::vector<uint32_t>{429});
  ASSERT_EQ(p.retriable_headers.size(), 1u);
  EXPECT_EQ(p.retriable_headers[0].name, "x-retry");
  EXPECT_EQ(p.base_interval, milliseconds(100));
  EXPECT_EQ(p.max_interval, milliseconds(1000));  // 10 x base by default
  ASSERT_EQ(p.reset_headers.size(), 2u);
  EXPECT_EQ(p.reset_headers[0].name, "retry-after");
  EXPECT_EQ(p.reset_headers[0].format, config::RetryPolicy::ResetHeader::Format::Seconds);
  EXPECT_EQ(p.reset_headers[1].format, config::RetryPolicy::ResetHeader::Format::UnixTimestamp);
  EXPECT_EQ(p.reset_max_interval, milliseconds(5000));
  EXPECT_EQ(action.retry_buffer_bytes, 1024u);
}

TEST(TranslateRetryPolicy, DefaultsAndVirtualHostFallback) {
  auto out = routesWith(R"(retry_policy { retry_on: "5xx" } per_request_buffer_limit_bytes { value: 2048 })", "");
  ASSERT_TRUE(out) << out.error().describe();
  const auto& action = *out->virtual_hosts[0].routes[0].route;
  ASSERT_TRUE(action.retry_policy);
  EXPECT_EQ(action.retry_policy->num_retries, 1u);
  EXPECT_EQ(action.retry_policy->base_interval, milliseconds(25));
  EXPECT_EQ(action.retry_policy->max_interval, milliseconds(250));
  EXPECT_EQ(action.retry_policy->per_try_timeout, milliseconds(0));
  EXPECT_FALSE(action.retry_policy->previous_hosts);
  EXPECT_EQ(action.retry_buffer_bytes, 2048u);

  // The route's own policy replaces the virtual host's whole.
  auto own = routesWith(R"(retry_policy { retry_on: "5xx" num_retries { value: 7 } })", "",
                        R"(retry_policy { retry_on: "reset" })");
  ASSERT_TRUE(own);
  EXPECT_EQ(own->virtual_hosts[0].routes[0].route->retry_policy->retry_on, config::RetryPolicy::kReset);
  EXPECT_EQ(own->virtual_hosts[0].routes[0].route->retry_policy->num_retries, 1u);

  auto none = routesWith("", "");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->virtual_hosts[0].routes[0].route->retry_policy);
  EXPECT_EQ(none->virtual_hosts[0].routes[0].route->retry_buffer_bytes, config::kDefaultRetryBufferBytes);
}

void expectRejected(const common::Result<config::RouteConfiguration>& r, const std::string& where) {
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().where, where) << r.error().describe();
}

TEST(TranslateRetryPolicy, Rejections) {
  const std::string at = "virtual_hosts[0].routes[0].route.retry_policy.";
  expectRejected(routesWith("", "", R"(retry_policy { retry_on: "5xx,envoy-ratelimited" })"), at + "retry_on");
  expectRejected(routesWith("", "", R"(retry_policy { retry_host_predicate { name: "envoy.retry_host_predicates.omit_canary_hosts" } })"),
                 at + "retry_host_predicate[0].name");
  expectRejected(routesWith("", "", R"(retry_policy { retry_priority { name: "p" } })"), at + "retry_priority");
  expectRejected(routesWith("", "", R"(retry_policy { retriable_request_headers { name: "x" } })"),
                 at + "retriable_request_headers");
  expectRejected(routesWith("", "", R"(retry_policy { retry_back_off { max_interval { seconds: 1 } } })"),
                 at + "retry_back_off.base_interval");
  expectRejected(
      routesWith("", "", R"(retry_policy { retry_back_off { base_interval { seconds: 2 } max_interval { seconds: 1 } } })"),
      at + "retry_back_off.max_interval");
  expectRejected(routesWith("", "", R"(retry_policy { rate_limited_retry_back_off { } })"),
                 at + "rate_limited_retry_back_off.reset_headers");
  expectRejected(routesWith("", "", R"(retry_policy { retriable_status_codes: 700 })"), at + "retriable_status_codes");
  expectRejected(routesWith(R"(retry_policy { retry_on: "bogus" })", ""), "virtual_hosts[0].retry_policy.retry_on");
}

TEST(TranslateRoutingPriority, RouteAndThresholds) {
  auto high = routesWith("", "", "priority: HIGH");
  ASSERT_TRUE(high) << high.error().describe();
  EXPECT_EQ(high->virtual_hosts[0].routes[0].route->priority, config::RoutingPriority::High);
  auto plain = routesWith("", "");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->virtual_hosts[0].routes[0].route->priority, config::RoutingPriority::Default);
  auto unknown = routesWith("", "", "priority: 7");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().where, "virtual_hosts[0].routes[0].route.priority");

  auto cluster = translateCluster(parse<Cluster>(R"(name: "c" circuit_breakers {
      thresholds { max_requests { value: 5 } }
      thresholds { priority: HIGH max_requests { value: 50 } max_connections { value: 7 } } })"));
  ASSERT_TRUE(cluster) << cluster.error().describe();
  EXPECT_EQ(cluster->breakers(config::RoutingPriority::Default).max_requests, 5u);
  EXPECT_EQ(cluster->breakers(config::RoutingPriority::Default).max_connections, 1024u);
  EXPECT_EQ(cluster->breakers(config::RoutingPriority::High).max_requests, 50u);
  EXPECT_EQ(cluster->breakers(config::RoutingPriority::High).max_connections, 7u);
  EXPECT_EQ(cluster->breakers(config::RoutingPriority::High).max_pending_requests, 1024u);
}

TEST(TranslateHedgePolicy, RouteReplacesVirtualHost) {
  auto vhost = routesWith(R"(hedge_policy { hedge_on_per_try_timeout: true })", "");
  ASSERT_TRUE(vhost) << vhost.error().describe();
  EXPECT_TRUE(vhost->virtual_hosts[0].routes[0].route->hedge_on_per_try_timeout);

  // The route's own policy replaces the virtual host's whole, even when it hedges less.
  auto own = routesWith(R"(hedge_policy { hedge_on_per_try_timeout: true })", "",
                        R"(hedge_policy { initial_requests { value: 1 } })");
  ASSERT_TRUE(own) << own.error().describe();
  EXPECT_FALSE(own->virtual_hosts[0].routes[0].route->hedge_on_per_try_timeout);

  auto none = routesWith("", "");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->virtual_hosts[0].routes[0].route->hedge_on_per_try_timeout);
}

TEST(TranslateHedgePolicy, WhatEnvoyLeavesUnimplementedIsRejected) {
  auto more = routesWith("", "", R"(hedge_policy { initial_requests { value: 2 } })");
  ASSERT_FALSE(more);
  EXPECT_EQ(more.error().where, "virtual_hosts[0].routes[0].route.hedge_policy.initial_requests");
  auto chance = routesWith(R"(hedge_policy { additional_request_chance { numerator: 5 } })", "");
  ASSERT_FALSE(chance);
  EXPECT_EQ(chance.error().where, "virtual_hosts[0].hedge_policy.additional_request_chance");
}

TEST(TranslateRetryLimits, MaxRetriesAndBudget) {
  auto defaults = translateCluster(parse<Cluster>(R"(name: "c")"));
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->retry_limits.max_retries, 3u);
  EXPECT_FALSE(defaults->retry_limits.budget);

  auto limited = translateCluster(parse<Cluster>(R"(name: "c" circuit_breakers {
      thresholds { max_retries { value: 1 } }
      thresholds { priority: HIGH max_retries { value: 9 } } })"));
  ASSERT_TRUE(limited) << limited.error().describe();
  EXPECT_EQ(limited->retry_limits.max_retries, 1u);
  EXPECT_EQ(limited->high_retry_limits.max_retries, 9u);
  EXPECT_EQ(limited->retryLimits(config::RoutingPriority::High).max_retries, 9u);

  auto budget = translateCluster(parse<Cluster>(
      R"(name: "c" circuit_breakers { thresholds { retry_budget { budget_percent { value: 50 } } } })"));
  ASSERT_TRUE(budget) << budget.error().describe();
  ASSERT_TRUE(budget->retry_limits.budget);
  EXPECT_EQ(budget->retry_limits.budget->budget_percent, 50.0);
  EXPECT_EQ(budget->retry_limits.budget->min_retry_concurrency, 3u);
}

TEST(TranslateRetryLimits, SharesThresholdsWithTheOtherBreakersAndChecksTheBudget) {
  auto r = translateCluster(parse<Cluster>(
      R"(name: "c" circuit_breakers { thresholds { max_requests { value: 5 } max_retries { value: 2 } } })"));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->circuit_breakers.max_requests, 5u);
  EXPECT_EQ(r->retry_limits.max_retries, 2u);
  r = translateCluster(parse<Cluster>(
      R"(name: "c" circuit_breakers { thresholds { retry_budget { budget_percent { value: 150 } } } })"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().where, "circuit_breakers.thresholds[0].retry_budget.budget_percent");
}

}  // namespace
}  // namespace culvert::xds::translate

namespace culvert::xds::translate {
namespace {

TEST(TranslateStreamTimeouts, RouteIdleTimeout) {
  auto out = routesWith("", "", "idle_timeout { nanos: 250000000 }");
  ASSERT_TRUE(out) << out.error().describe();
  EXPECT_EQ(out->virtual_hosts[0].routes[0].route->idle_timeout, milliseconds(250));
  auto none = routesWith("", "");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->virtual_hosts[0].routes[0].route->idle_timeout);
}

TEST(TranslateStreamTimeouts, MaxStreamDuration) {
  auto out = routesWith("", "",
                        "max_stream_duration { max_stream_duration { seconds: 1 } grpc_timeout_header_max { nanos: "
                        "500000000 } grpc_timeout_header_offset { nanos: 10000000 } }");
  ASSERT_TRUE(out) << out.error().describe();
  const auto& m = out->virtual_hosts[0].routes[0].route->max_stream_duration;
  ASSERT_TRUE(m);
  EXPECT_EQ(m->max, milliseconds(1000));
  EXPECT_EQ(m->grpc_timeout_header_max, milliseconds(500));
  EXPECT_EQ(m->grpc_timeout_header_offset, milliseconds(10));
  auto header_only = routesWith("", "", "max_stream_duration { grpc_timeout_header_max {} }");
  ASSERT_TRUE(header_only);
  EXPECT_EQ(header_only->virtual_hosts[0].routes[0].route->max_stream_duration->max, milliseconds(0));
  EXPECT_EQ(header_only->virtual_hosts[0].routes[0].route->max_stream_duration->grpc_timeout_header_max,
            milliseconds(0));
}

envoy::config::listener::v3::Listener listenerProto(const std::string& hcm_extra) {
  return parse<envoy::config::listener::v3::Listener>(R"(
    name: "vip" address { socket_address { address: "10.96.0.10" port_value: 80 } }
    filter_chains { filters {
      name: "envoy.filters.network.http_connection_manager"
      typed_config {
        [type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager] {
          stat_prefix: "vip"
          route_config { name: "r" }
          http_filters { name: "envoy.filters.http.router" }
          )" + hcm_extra + R"(
        }
      }
    } })");
}

common::Result<config::Listener> listenerWith(const std::string& hcm_extra) {
  return translateListener(listenerProto(hcm_extra));
}

TEST(TranslateStreamTimeouts, ConnectionManagerTimeouts) {
  auto defaults = listenerWith("");
  ASSERT_TRUE(defaults) << defaults.error().describe();
  const auto& d = defaults->filter_chains[0].http.timeouts;
  EXPECT_EQ(d.stream_idle, std::chrono::minutes(5));
  EXPECT_EQ(d.request, milliseconds(0));
  EXPECT_EQ(d.request_headers, milliseconds(0));
  auto set = listenerWith(
      "stream_idle_timeout { seconds: 2 } request_timeout { seconds: 3 } request_headers_timeout { nanos: 300000000 }");
  ASSERT_TRUE(set) << set.error().describe();
  const auto& t = set->filter_chains[0].http.timeouts;
  EXPECT_EQ(t.stream_idle, milliseconds(2000));
  EXPECT_EQ(t.request, milliseconds(3000));
  EXPECT_EQ(t.request_headers, milliseconds(300));
  auto bad = listenerWith("stream_idle_timeout { seconds: -1 }");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().where, "filter_chains[0].filters[0].typed_config.stream_idle_timeout");
}

TEST(TranslateConnectionLifetime, ConnectionManagerCommonOptions) {
  auto defaults = listenerWith("");
  ASSERT_TRUE(defaults) << defaults.error().describe();
  EXPECT_EQ(defaults->filter_chains[0].http.connection_lifetime.idle_timeout, std::chrono::hours(1));
  EXPECT_EQ(defaults->filter_chains[0].http.connection_lifetime.max_duration, milliseconds(0));
  auto set = listenerWith(
      "codec_type: HTTP1 common_http_protocol_options { idle_timeout { nanos: 300000000 } "
      "max_connection_duration { seconds: 2 } }");
  ASSERT_TRUE(set) << set.error().describe();
  EXPECT_EQ(set->filter_chains[0].http.connection_lifetime.idle_timeout, milliseconds(300));
  EXPECT_EQ(set->filter_chains[0].http.connection_lifetime.max_duration, milliseconds(2000));
  const std::string where = "filter_chains[0].filters[0].typed_config.common_http_protocol_options";
  // The same lifetime whichever codec serves the connection (AUTO sniffs per connection).
  for (const auto* codec : {"", "codec_type: AUTO ", "codec_type: HTTP2 "}) {
    auto h2 = listenerWith(std::string(codec) + "common_http_protocol_options { idle_timeout { seconds: 1 } }");
    ASSERT_TRUE(h2) << codec << h2.error().describe();
    EXPECT_EQ(h2->filter_chains[0].http.connection_lifetime.idle_timeout, milliseconds(1000)) << codec;
  }
  auto bad = listenerWith("codec_type: HTTP1 common_http_protocol_options { max_connection_duration { seconds: -1 } }");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().where, where + ".max_connection_duration");
}

TEST(TranslateConnectionLifetime, DrainTimeout) {
  auto defaults = listenerWith("");
  ASSERT_TRUE(defaults) << defaults.error().describe();
  EXPECT_EQ(defaults->filter_chains[0].http.drain_timeout, milliseconds(5000));  // Envoy's default
  auto set = listenerWith("codec_type: HTTP2 drain_timeout { nanos: 250000000 }");
  ASSERT_TRUE(set) << set.error().describe();
  EXPECT_EQ(set->filter_chains[0].http.drain_timeout, milliseconds(250));
  auto zero = listenerWith("drain_timeout {}");
  ASSERT_TRUE(zero) << zero.error().describe();
  EXPECT_EQ(zero->filter_chains[0].http.drain_timeout, milliseconds(0));
  auto bad = listenerWith("drain_timeout { seconds: -1 }");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().where, "filter_chains[0].filters[0].typed_config.drain_timeout");
}

// max_headers_count (2), max_stream_duration (4), headers_with_underscores_action (5),
// max_requests_per_connection (6) change behaviour culvert does not implement: rejected
// with their path whatever the codec, now that AUTO and HTTP2 take the lifetime fields.
TEST(TranslateConnectionLifetime, OtherCommonOptionsStayRejected) {
  namespace hcm = envoy::extensions::filters::network::http_connection_manager::v3;
  for (const auto* codec : {"codec_type: AUTO ", "codec_type: HTTP2 "}) {
    for (int field : {2, 4, 5, 6}) {
      auto proto = listenerProto(std::string(codec) + "common_http_protocol_options { idle_timeout { seconds: 1 } }");
      auto* any = proto.mutable_filter_chains(0)->mutable_filters(0)->mutable_typed_config();
      hcm::HttpConnectionManager manager;
      ASSERT_TRUE(any->UnpackTo(&manager));
      auto* common = manager.mutable_common_http_protocol_options();
      common->GetReflection()->MutableUnknownFields(common)->AddVarint(field, 1);
      any->PackFrom(manager);
      auto out = translateListener(proto);
      ASSERT_FALSE(out) << codec << field;
      EXPECT_EQ(out.error().where, "filter_chains[0].filters[0].typed_config.common_http_protocol_options")
          << out.error().describe();
      EXPECT_NE(out.error().describe().find("field number " + std::to_string(field)), std::string::npos)
          << out.error().describe();
    }
  }
}

}  // namespace
}  // namespace culvert::xds::translate
