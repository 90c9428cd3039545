#pragma once

// The Snapshot parts: what xds/translate produces and the data path reads. Plain C++,
// no protobuf. Every part is immutable once published and separately ref-counted, so a
// worker holding one part (a route table for a long stream) never pins the others.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/common/socket_address.h"

namespace culvert::config {

using common::CidrRange;
using common::SocketAddress;

// --- Routes (envoy.config.route.v3) ---

struct HeaderMatcher {
  std::string name;           // lower-case
  std::optional<std::string> exact_match;
  bool present_match = false;
  bool invert_match = false;
};

struct RouteMatch {
  // Exactly one of prefix / path is set by translate.
  std::optional<std::string> prefix;
  std::optional<std::string> path;
  bool case_sensitive = true;
  std::vector<HeaderMatcher> headers;
};

// route.hash_policy: what a consistent-hashing load balancer (RING_HASH, MAGLEV) hashes.
struct HashPolicy {
  enum class Kind { Header, Cookie, SourceIp };
  Kind kind = Kind::Header;
  std::string name;  // header (lower-case) or cookie name
  bool terminal = false;
};

struct RouteAction {
  std::string cluster;
  std::vector<HashPolicy> hash_policy;
  std::optional<std::string> prefix_rewrite;
  std::optional<std::string> host_rewrite_literal;
  std::chrono::milliseconds timeout{15000};  // Envoy's default route timeout
};

struct DirectResponse {
  uint32_t status = 200;
  std::string body;
};

struct Route {
  std::string name;
  RouteMatch match;
  // One of route / direct_response.
  std::optional<RouteAction> route;
  std::optional<DirectResponse> direct_response;
};

struct VirtualHost {
  std::string name;
  std::vector<std::string> domains;  // lower-case: "example.com", "*.example.com", "example.*", "*"
  std::vector<Route> routes;
};

struct RouteConfiguration {
  std::string name;
  std::vector<VirtualHost> virtual_hosts;
};

// --- Listeners (envoy.config.listener.v3) ---

struct HttpConnectionManager {
  std::string stat_prefix;
  // Inline route_config, or resolved from RDS by name.
  std::string route_config_name;
  std::shared_ptr<const RouteConfiguration> route_config;
};

// envoy.filters.network.tcp_proxy: bytes both ways between the downstream connection and
// one upstream of `cluster`.
struct TcpProxy {
  std::string stat_prefix;
  std::string cluster;
  std::chrono::milliseconds idle_timeout{std::chrono::hours(1)};  // 0 = none (Envoy's rule)
};

struct FilterChainMatch {
  std::vector<CidrRange> prefix_ranges;       // destination; empty = any
  std::optional<uint16_t> destination_port;
  std::vector<std::string> server_names;
  std::string transport_protocol;             // "" (any), "raw_buffer", "tls"
};

struct FilterChain {
  std::string name;
  FilterChainMatch match;
  // Exactly one network filter: the HTTP connection manager (http.route_config set) or
  // a TCP proxy.
  HttpConnectionManager http;
  std::optional<TcpProxy> tcp_proxy;

  bool isHttp() const { return http.route_config != nullptr; }
};

struct Listener {
  std::string name;
  SocketAddress address;
  // false: a virtual listener; `address` is a capture selector (VIP:port, or any-IP:port).
  bool bind_to_port = true;
  std::vector<FilterChain> filter_chains;
};

// --- Clusters (envoy.config.cluster.v3 / endpoint.v3) ---

enum class LbPolicy { RoundRobin, LeastRequest, Random, RingHash, Maglev };
// Eds: endpoints come from a ClusterLoadAssignment named eds_service_name.
// OriginalDst: the endpoint is the connection's original destination (captured
// traffic that should go where it was going).
enum class ClusterType { Static, Eds, OriginalDst };

struct Endpoint {
  SocketAddress address;
  uint32_t weight = 1;
  uint32_t priority = 0;  // 0 is tried first; higher ones take load as it loses health
};

struct LeastRequestConfig {
  uint32_t choice_count = 2;
  double active_request_bias = 1.0;
};

struct RingHashConfig {
  uint64_t minimum_ring_size = 1024;
  uint64_t maximum_ring_size = 8 * 1024 * 1024;
};

// cluster.circuit_breakers.thresholds (DEFAULT priority); Envoy's defaults.
struct CircuitBreakers {
  uint32_t max_connections = 1024;
  uint32_t max_pending_requests = 1024;
  uint32_t max_requests = 1024;
};

// cluster.outlier_detection, with Envoy's defaults, plus culvert's latency ejection.
struct OutlierDetection {
  std::chrono::milliseconds interval{10000};
  std::chrono::milliseconds base_ejection_time{30000};
  std::chrono::milliseconds max_ejection_time{300000};
  uint32_t max_ejection_percent = 10;
  uint32_t consecutive_5xx = 5;
  uint32_t enforcing_consecutive_5xx = 100;
  uint32_t consecutive_gateway_failure = 5;
  uint32_t enforcing_consecutive_gateway_failure = 0;
  bool split_external_local_origin_errors = false;
  uint32_t consecutive_local_origin_failure = 5;
  uint32_t enforcing_consecutive_local_origin_failure = 100;
  uint32_t success_rate_minimum_hosts = 5;
  uint32_t success_rate_request_volume = 100;
  uint32_t success_rate_stdev_factor = 1900;  // divided by 1000
  uint32_t enforcing_success_rate = 100;
  uint32_t failure_percentage_threshold = 85;
  uint32_t failure_percentage_minimum_hosts = 5;
  uint32_t failure_percentage_request_volume = 50;
  uint32_t enforcing_failure_percentage = 0;
  // culvert.v1.ClusterExtensions.latency_ejection: 0 = off.
  double latency_ejection_multiple = 0;
  uint32_t latency_ejection_minimum_hosts = 3;
  uint32_t latency_ejection_request_volume = 10;
  double latency_ewma_alpha = 0.3;
};

// cluster.health_checks[0]: active checks of every endpoint, HTTP or TCP (connect only).
struct HealthCheck {
  enum class Kind { Http, Tcp };
  Kind kind = Kind::Tcp;
  std::chrono::milliseconds timeout{1000};
  std::chrono::milliseconds interval{5000};
  std::chrono::milliseconds interval_jitter{0};
  uint32_t unhealthy_threshold = 1;
  uint32_t healthy_threshold = 1;
  // HTTP
  std::string path;
  std::string host;  // empty: the cluster name (Envoy's default)
  std::vector<std::pair<uint32_t, uint32_t>> expected_statuses{{200, 201}};  // [start, end)
};

struct Cluster {
  std::string name;
  ClusterType type = ClusterType::Static;
  LbPolicy lb_policy = LbPolicy::RoundRobin;
  std::chrono::milliseconds connect_timeout{5000};
  std::vector<Endpoint> endpoints;
  std::string eds_service_name;  // only for ClusterType::Eds
  LeastRequestConfig least_request;
  RingHashConfig ring_hash;
  uint64_t maglev_table_size = 65537;
  uint32_t healthy_panic_threshold = 50;  // percent; 0 disables panic mode
  CircuitBreakers circuit_breakers;
  std::optional<OutlierDetection> outlier_detection;
  std::optional<HealthCheck> health_check;
};

// --- The parts ---

struct ListenerTable {
  std::map<std::string, std::shared_ptr<const Listener>> by_name;
};

struct ClusterTable {
  std::map<std::string, std::shared_ptr<const Cluster>> by_name;
};

struct Snapshot {
  std::string version;
  std::shared_ptr<const ListenerTable> listeners = std::make_shared<ListenerTable>();
  std::shared_ptr<const ClusterTable> clusters = std::make_shared<ClusterTable>();
};

}  // namespace culvert::config
