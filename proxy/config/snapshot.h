#pragma once

// The Snapshot parts: what xds/translate produces and the data path reads. Plain C++,
// no protobuf. Every part is immutable once published and separately ref-counted, so a
// worker holding one part (a route table for a long stream) never pins the others.

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/accesslog/access_log.h"
#include "proxy/common/heap_optional.h"
#include "proxy/common/regex.h"
#include "proxy/common/socket_address.h"
#include "proxy/config/tenant.h"

namespace culvert::config {

using common::CidrRange;
using common::SocketAddress;

// --- Routes (envoy.config.route.v3) ---

// envoy.type.matcher.v3.StringMatcher.
struct StringMatcher {
  enum class Kind { Exact, Prefix, Suffix, Contains, Regex };
  Kind kind = Kind::Exact;
  std::string value;  // lower-case when ignore_case (not for Regex)
  bool ignore_case = false;
  std::shared_ptr<const common::Regex> regex;  // Kind::Regex only
};

// envoy.type.v3.Int64Range: [start, end).
struct Int64Range {
  int64_t start = 0;
  int64_t end = 0;
};

struct HeaderMatcher {
  std::string name;           // lower-case
  // One of string_match / range_match / present_match (exact_match, safe_regex_match and
  // the prefix/suffix/contains forms arrive here as a StringMatcher).
  std::optional<StringMatcher> string_match;
  std::optional<Int64Range> range_match;
  bool present_match = false;
  bool invert_match = false;
};

struct QueryParameterMatcher {
  std::string name;
  std::optional<StringMatcher> string_match;  // unset: the parameter must be present
};

struct RouteMatch {
  // Exactly one of prefix / path / safe_regex is set by translate.
  std::optional<std::string> prefix;
  std::optional<std::string> path;
  std::shared_ptr<const common::Regex> safe_regex;  // matched against the whole path, query excluded
  bool case_sensitive = true;
  std::vector<HeaderMatcher> headers;
  std::vector<QueryParameterMatcher> query_parameters;
  // connect_matcher: the route matches CONNECT requests, and only those (a CONNECT
  // request never matches a path route).
  bool connect_matcher = false;
};

// envoy.config.core.v3.HeaderValueOption.
struct HeaderValueOption {
  enum class Action { AppendIfExistsOrAdd, AddIfAbsent, OverwriteIfExistsOrAdd, OverwriteIfExists };
  std::string name;  // lower-case
  std::string value;
  Action action = Action::AppendIfExistsOrAdd;
  bool keep_empty_value = false;
};

// Headers to add and remove at one level (route configuration, virtual host, route,
// weighted cluster).
struct HeaderMutations {
  std::vector<HeaderValueOption> request_headers_to_add;
  std::vector<std::string> request_headers_to_remove;  // lower-case
  std::vector<HeaderValueOption> response_headers_to_add;
  std::vector<std::string> response_headers_to_remove;  // lower-case

  bool empty() const {
    return request_headers_to_add.empty() && request_headers_to_remove.empty() && response_headers_to_add.empty() &&
           response_headers_to_remove.empty();
  }
};

struct ClusterWeight {
  std::string name;
  uint32_t weight = 0;
  HeaderMutations headers;
};

struct WeightedClusters {
  std::vector<ClusterWeight> clusters;
  uint64_t total_weight = 0;  // the sum of the weights (> 0)
};

struct RegexRewrite {
  std::shared_ptr<const common::Regex> pattern;
  std::string substitution;
};

// A route's priority (RouteAction.priority): which of a cluster's circuit-breaker
// thresholds and connection pools its requests use.
enum class RoutingPriority : uint8_t { Default = 0, High = 1 };

// envoy.config.route.v3.RetryPolicy (route or virtual host; the route's wins).
struct RetryPolicy {
  // retry_on conditions, as bits.
  enum On : uint32_t {
    k5xx = 1u << 0,
    kGatewayError = 1u << 1,
    kReset = 1u << 2,
    kConnectFailure = 1u << 3,
    kRefusedStream = 1u << 4,
    kRetriable4xx = 1u << 5,
    kRetriableStatusCodes = 1u << 6,
    kRetriableHeaders = 1u << 7,
    kGrpcCancelled = 1u << 8,
    kGrpcDeadlineExceeded = 1u << 9,
    kGrpcInternal = 1u << 10,
    kGrpcResourceExhausted = 1u << 11,
    kGrpcUnavailable = 1u << 12,
  };
  // Retry-After-style headers of rate_limited_retry_back_off.
  struct ResetHeader {
    enum class Format { Seconds, UnixTimestamp };
    std::string name;  // lower-case
    Format format = Format::Seconds;
  };

  uint32_t retry_on = 0;
  uint32_t num_retries = 1;
  std::chrono::milliseconds per_try_timeout{0};       // 0 = none
  std::chrono::milliseconds per_try_idle_timeout{0};  // 0 = none
  std::vector<uint32_t> retriable_status_codes;
  std::vector<HeaderMatcher> retriable_headers;
  std::chrono::milliseconds base_interval{25};
  std::chrono::milliseconds max_interval{250};  // default 10 x base_interval
  std::vector<ResetHeader> reset_headers;       // empty = no rate-limited back-off
  std::chrono::milliseconds reset_max_interval{300000};
  bool previous_hosts = false;                  // retry_host_predicate previous_hosts
  uint32_t host_selection_retry_max_attempts = 1;
};

// How much of a request body is kept so a retry can replay it (Envoy's
// per_request_buffer_limit_bytes; culvert's default when neither route nor vhost sets it).
inline constexpr uint32_t kDefaultRetryBufferBytes = 64 * 1024;

// RouteAction.max_stream_duration: how long a stream on the route may last; a gRPC
// request's grpc-timeout header sets it when grpc_timeout_header_max is present.
struct MaxStreamDuration {
  std::chrono::milliseconds max{0};  // 0 = none
  std::optional<std::chrono::milliseconds> grpc_timeout_header_max;  // 0 = the header, uncapped
  std::chrono::milliseconds grpc_timeout_header_offset{0};
};

// route.hash_policy: what a consistent-hashing load balancer (RING_HASH, MAGLEV) hashes.
struct HashPolicy {
  enum class Kind { Header, Cookie, SourceIp };
  Kind kind = Kind::Header;
  std::string name;  // header (lower-case) or cookie name
  bool terminal = false;
};

// One entry of HttpConnectionManager.upgrade_configs or RouteAction.upgrade_configs.
// An upgrade type is enabled when the connection manager lists it and the route, if it
// lists it too, does not turn it off (Envoy's rule).
struct UpgradeConfig {
  std::string upgrade_type;  // lower-case: "websocket" or "connect"
  bool enabled = true;
  // Route only, CONNECT only (connect_config): culvert answers the CONNECT itself and
  // tunnels raw TCP to the route's cluster, instead of forwarding the CONNECT upstream.
  bool terminate_connect = false;
};

struct RouteAction {
  std::string cluster;  // empty when weighted_clusters is set
  RoutingPriority priority = RoutingPriority::Default;
  std::optional<WeightedClusters> weighted_clusters;
  std::vector<HashPolicy> hash_policy;
  std::optional<std::string> prefix_rewrite;
  std::optional<RegexRewrite> regex_rewrite;
  std::optional<std::string> host_rewrite_literal;
  std::chrono::milliseconds timeout{15000};  // Envoy's default route timeout
  // Replaces the connection manager's stream_idle_timeout for this route; 0 = none.
  std::optional<std::chrono::milliseconds> idle_timeout;
  std::optional<MaxStreamDuration> max_stream_duration;
  // The route's retry_policy, else its virtual host's (translate resolves that).
  std::optional<RetryPolicy> retry_policy;
  uint32_t retry_buffer_bytes = kDefaultRetryBufferBytes;  // per_request_buffer_limit_bytes
  // hedge_policy.hedge_on_per_try_timeout (the route's, else its virtual host's): a per-try
  // timeout starts another attempt beside the one that timed out; the first good answer wins.
  bool hedge_on_per_try_timeout = false;
  std::vector<UpgradeConfig> upgrade_configs;
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
  HeaderMutations headers;
};

struct VirtualHost {
  std::string name;
  std::vector<std::string> domains;  // lower-case: "example.com", "*.example.com", "example.*", "*"
  std::vector<Route> routes;
  HeaderMutations headers;
};

struct RouteConfiguration {
  std::string name;
  std::vector<VirtualHost> virtual_hosts;
  HeaderMutations headers;
};

// --- Listeners (envoy.config.listener.v3) ---

// The connection manager's downstream stream timeouts; 0 = none.
struct StreamTimeouts {
  std::chrono::milliseconds stream_idle{std::chrono::minutes(5)};  // Envoy's default
  std::chrono::milliseconds request{0};          // until the whole request is received
  std::chrono::milliseconds request_headers{0};  // from its first byte until its head is parsed
};

// How long a connection lives (core.v3.HttpProtocolOptions): a downstream one (the
// HttpConnectionManager's) or a pooled upstream one (its cluster's). Idle = no request in
// flight; past max_duration it drains (downstream) or is not reused (upstream).
struct ConnectionLifetime {
  std::chrono::milliseconds idle_timeout{std::chrono::hours(1)};  // Envoy's default; 0 = never
  std::chrono::milliseconds max_duration{0};                       // 0 = unlimited
  uint32_t max_requests = 0;  // requests (HTTP/2: streams) per connection; 0 = unlimited
  friend bool operator==(const ConnectionLifetime&, const ConnectionLifetime&) = default;
};

struct HttpConnectionManager {
  // AUTO: HTTP/2 when the connection starts with its preface, else HTTP/1.1.
  enum class CodecType { Auto, Http1, Http2 };
  std::string stat_prefix;
  CodecType codec_type = CodecType::Auto;
  StreamTimeouts timeouts;
  ConnectionLifetime connection_lifetime;
  // HTTP/2: from the shutdown notice (GOAWAY 2^31-1) that starts a drain to the final
  // GOAWAY; streams that raced the notice are still taken meanwhile. Envoy's default.
  std::chrono::milliseconds drain_timeout{5000};
  // Inline route_config, or resolved from RDS by name.
  std::string route_config_name;
  std::shared_ptr<const RouteConfiguration> route_config;
  accesslog::AccessLogConfigs access_logs{};
  std::vector<UpgradeConfig> upgrade_configs;  // HTTP/1.1 downstream only
};

// envoy.filters.network.tcp_proxy: bytes both ways between the downstream connection and
// one upstream of `cluster`.
struct TcpProxy {
  std::string stat_prefix;
  std::string cluster;
  std::chrono::milliseconds idle_timeout{std::chrono::hours(1)};  // 0 = none (Envoy's rule)
  accesslog::AccessLogConfigs access_logs{};
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
// StrictDns: every address each dns.targets hostname resolves to is an endpoint.
// LogicalDns: one endpoint, the first address the one target resolved to last; pooled
// connections to earlier addresses are kept.
enum class ClusterType { Static, Eds, OriginalDst, StrictDns, LogicalDns };

struct Endpoint {
  SocketAddress address;
  uint32_t weight = 1;
  uint32_t priority = 0;  // 0 is tried first; higher ones take load as it loses health
  uint32_t locality = 0;  // index into the cluster's `localities` (0 when it has none)
};

// A cluster's endpoints: one immutable vector shared by the EDS resource it came from and
// every cluster resolved from it, and by copies of a cluster, instead of a copy each (40
// bytes an endpoint, twice over for every EDS cluster). Reads look like a const
// std::vector; a write copies the vector first when it is shared. Not for concurrent
// writes: configuration is built on one thread, then published immutable.
class EndpointList {
public:
  EndpointList() = default;
  EndpointList(std::vector<Endpoint> endpoints)  // NOLINT: implicit, as a vector assigns
      : endpoints_(endpoints.empty() ? nullptr : std::make_shared<std::vector<Endpoint>>(std::move(endpoints))) {}
  EndpointList(std::initializer_list<Endpoint> endpoints) : EndpointList(std::vector<Endpoint>(endpoints)) {}

  const std::vector<Endpoint>& vector() const { return endpoints_ ? *endpoints_ : none(); }
  operator const std::vector<Endpoint>&() const { return vector(); }  // NOLINT: reads as the vector
  size_t size() const { return vector().size(); }
  bool empty() const { return vector().empty(); }
  const Endpoint& operator[](size_t i) const { return vector()[i]; }
  const Endpoint& front() const { return vector().front(); }
  const Endpoint& back() const { return vector().back(); }
  std::vector<Endpoint>::const_iterator begin() const { return vector().begin(); }
  std::vector<Endpoint>::const_iterator end() const { return vector().end(); }
  // Whether both share one vector (no element comparison).
  bool sharesWith(const EndpointList& other) const { return endpoints_ == other.endpoints_; }

  void push_back(const Endpoint& endpoint) { mutableVector().push_back(endpoint); }

private:
  static const std::vector<Endpoint>& none() {
    static const std::vector<Endpoint> nothing;
    return nothing;
  }
  std::vector<Endpoint>& mutableVector() {
    if (!endpoints_) {
      endpoints_ = std::make_shared<std::vector<Endpoint>>();
    } else if (endpoints_.use_count() > 1) {
      endpoints_ = std::make_shared<std::vector<Endpoint>>(*endpoints_);
    }
    return *endpoints_;
  }

  std::shared_ptr<std::vector<Endpoint>> endpoints_;  // null: none
};

// One locality of an assignment (EDS or a static load_assignment): its LocalityLbEndpoints
// entries of one priority that name the same Locality. What locality-weighted balancing
// needs to know of it.
struct Locality {
  uint32_t weight = 0;  // load_balancing_weight; 0 when unset (no load under locality weighting)
  uint32_t priority = 0;
  // Its lb_endpoints, counting those EDS marks unhealthy, which are not endpoints: Envoy
  // counts them in a locality's size, so they lower its availability.
  uint32_t hosts = 0;
  bool operator==(const Locality&) const = default;
};

// A translated ClusterLoadAssignment.
struct LoadAssignment {
  EndpointList endpoints;
  std::vector<Locality> localities;
};

// How a STRICT_DNS / LOGICAL_DNS cluster resolves (cluster.dns_* and
// typed_dns_resolver_config with CaresDnsResolverConfig).
struct DnsResolution {
  // Cluster.DnsLookupFamily. Auto: IPv6, IPv4 only when there is no IPv6 address.
  enum class LookupFamily { Auto, V4Only, V6Only, V4Preferred, All };
  // One load_assignment lb_endpoint whose socket_address.address is a hostname (or IP).
  struct Target {
    std::string hostname;
    uint16_t port = 0;
    uint32_t weight = 1;
    uint32_t priority = 0;
    uint32_t locality = 0;  // index into the cluster's `localities`: its entry's
    bool operator==(const Target&) const = default;
  };
  std::vector<Target> targets;
  LookupFamily lookup_family = LookupFamily::Auto;
  std::chrono::milliseconds refresh_rate{5000};
  bool respect_dns_ttl = false;
  // dns_failure_refresh_rate; unset: failures re-resolve at refresh_rate.
  std::optional<std::chrono::milliseconds> failure_base_interval;
  std::chrono::milliseconds failure_max_interval{0};
  // Name servers (IP:port); empty = /etc/resolv.conf.
  std::vector<SocketAddress> resolvers;
  bool use_tcp = false;
  bool no_default_search_domain = false;
  bool operator==(const DnsResolution&) const = default;
};

struct LeastRequestConfig {
  uint32_t choice_count = 2;
  double active_request_bias = 1.0;
};

// Envoy's slow start (ROUND_ROBIN, LEAST_REQUEST): an endpoint that joined less than
// `window` ago has its weight scaled by max(min_weight_percent, time_factor^(1/aggression)),
// time_factor = max(seconds since it joined, 1) / window seconds.
struct SlowStartConfig {
  std::chrono::milliseconds window{0};
  double aggression = 1.0;
  double min_weight_percent = 10.0;
};

struct RingHashConfig {
  uint64_t minimum_ring_size = 1024;
  uint64_t maximum_ring_size = 8 * 1024 * 1024;
};

// cluster.circuit_breakers.thresholds of one priority; Envoy's defaults.
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

// The HTTP version of a cluster's upstream connections
// (envoy.extensions.upstreams.http.v3.HttpProtocolOptions); Downstream = the version the
// request arrived with.
enum class UpstreamHttpProtocol { Http1, Http2, Downstream };
// circuit_breakers.thresholds (default priority): the retry part.
struct RetryLimits {
  uint32_t max_retries = 3;  // concurrent retries across the cluster
  // retry_budget: when set, replaces max_retries.
  struct Budget {
    double budget_percent = 20.0;
    uint32_t min_retry_concurrency = 3;
  };
  std::optional<Budget> budget;
};

struct Cluster {
  std::string name;
  ClusterType type = ClusterType::Static;
  LbPolicy lb_policy = LbPolicy::RoundRobin;
  std::chrono::milliseconds connect_timeout{5000};
  EndpointList endpoints;
  // Endpoint::locality indexes it. DNS clusters: the load_assignment's localities, whose
  // `hosts` count what their names resolved to last.
  std::vector<Locality> localities;
  std::string eds_service_name;  // only for ClusterType::Eds
  // Only for StrictDns / LogicalDns: `endpoints` hold what resolved last (empty until the
  // first answer); agent/dns_clusters fills them in and republishes.
  // The optional policies below are HeapOptional: unset (the usual case) they cost a
  // pointer each instead of ~400 bytes in every cluster.
  common::HeapOptional<DnsResolution> dns;
  UpstreamHttpProtocol http_protocol = UpstreamHttpProtocol::Http1;
  ConnectionLifetime connection_lifetime;
  RetryLimits retry_limits;  // DEFAULT priority
  RetryLimits high_retry_limits;
  LeastRequestConfig least_request;
  common::HeapOptional<SlowStartConfig> slow_start;  // ROUND_ROBIN and LEAST_REQUEST only
  RingHashConfig ring_hash;
  uint64_t maglev_table_size = 65537;
  uint32_t healthy_panic_threshold = 50;  // percent; 0 disables panic mode
  // common_lb_config.locality_weighted_lb_config: within a priority, pick a locality by
  // effective weight first (ROUND_ROBIN, LEAST_REQUEST, RANDOM); RING_HASH and MAGLEV fold
  // the localities' weights into their hosts' weights instead (Envoy's thread-aware balancers).
  bool locality_weighted = false;
  CircuitBreakers circuit_breakers;  // DEFAULT priority
  CircuitBreakers high_circuit_breakers;
  common::HeapOptional<OutlierDetection> outlier_detection;
  common::HeapOptional<HealthCheck> health_check;

  const CircuitBreakers& breakers(RoutingPriority p) const {
    return p == RoutingPriority::High ? high_circuit_breakers : circuit_breakers;
  }
  const RetryLimits& retryLimits(RoutingPriority p) const {
    return p == RoutingPriority::High ? high_retry_limits : retry_limits;
  }
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
  std::shared_ptr<const TenantTable> tenants = std::make_shared<TenantTable>();
};

}  // namespace culvert::config
