#include "xds/translate/upstream_policies.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <set>
#include <string>

#include "proxy/common/ascii.h"
#include "xds/proto/culvert/v1/cluster_extensions.pb.h"
#include "xds/proto/envoy/config/cluster/v3/cluster.pb.h"
#include "xds/proto/envoy/config/route/v3/route.pb.h"
#include "xds/translate/proto_util.h"
#include "xds/translate/type_urls.h"

namespace culvert::xds::translate {

namespace {

using common::fail;
using common::nest;
using common::Result;

namespace cluster = envoy::config::cluster::v3;
namespace route = envoy::config::route::v3;

constexpr std::string_view kClusterExtensionsKey = "culvert.v1.ClusterExtensions";

Result<std::chrono::milliseconds> positiveMillis(const google::protobuf::Duration& d, const std::string& where) {
  if (d.seconds() < 0 || d.nanos() < 0 || d.nanos() > 999'999'999) return fail("duration must be non-negative", where);
  if (d.seconds() > std::numeric_limits<int32_t>::max()) return fail("duration is too large", where);
  std::chrono::milliseconds ms(d.seconds() * 1000 + d.nanos() / 1'000'000);
  if (ms.count() <= 0) return fail("must be at least 1ms", where);
  return ms;
}

Result<void> percentField(const google::protobuf::UInt32Value& v, uint32_t& out, const std::string& where) {
  if (v.value() > 100) return fail("must be at most 100", where);
  out = v.value();
  return {};
}

// Envoy's SlowStartConfig. Without a window there is no slow start (Envoy's default).
Result<std::optional<config::SlowStartConfig>> translateSlowStart(const cluster::Cluster::SlowStartConfig& proto,
                                                                 const std::string& where) {
  if (!proto.has_slow_start_window()) return std::optional<config::SlowStartConfig>{};
  config::SlowStartConfig out;
  auto window = positiveMillis(proto.slow_start_window(), where + ".slow_start_window");
  if (!window) return std::unexpected(window.error());
  out.window = *window;
  if (proto.has_aggression()) {
    if (!proto.aggression().runtime_key().empty()) {
      return fail("runtime keys are not supported", where + ".aggression.runtime_key");
    }
    out.aggression = proto.aggression().default_value();
    if (!(out.aggression > 0) || out.aggression > 1e6) return fail("must be greater than 0", where + ".aggression");
  }
  if (proto.has_min_weight_percent()) {
    out.min_weight_percent = proto.min_weight_percent().value();
    if (!(out.min_weight_percent >= 0 && out.min_weight_percent <= 100)) {
      return fail("must be in [0, 100]", where + ".min_weight_percent");
    }
  }
  return std::optional<config::SlowStartConfig>(out);
}

Result<void> translateLbConfig(const cluster::Cluster& proto, config::Cluster& out) {
  switch (proto.lb_policy()) {
    case cluster::Cluster::ROUND_ROBIN:
      out.lb_policy = config::LbPolicy::RoundRobin;
      break;
    case cluster::Cluster::LEAST_REQUEST:
      out.lb_policy = config::LbPolicy::LeastRequest;
      break;
    case cluster::Cluster::RANDOM:
      out.lb_policy = config::LbPolicy::Random;
      break;
    case cluster::Cluster::RING_HASH:
      out.lb_policy = config::LbPolicy::RingHash;
      break;
    case cluster::Cluster::MAGLEV:
      out.lb_policy = config::LbPolicy::Maglev;
      break;
    default:
      return fail("lb_policy " + cluster::Cluster::LbPolicy_Name(proto.lb_policy()) +
                      " is not supported; ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH and MAGLEV are",
                  "lb_policy");
  }
  switch (proto.lb_config_case()) {
    case cluster::Cluster::kRingHashLbConfig: {
      if (out.lb_policy != config::LbPolicy::RingHash) {
        return fail("ring_hash_lb_config needs lb_policy RING_HASH", "ring_hash_lb_config");
      }
      const auto& c = proto.ring_hash_lb_config();
      if (c.hash_function() != cluster::Cluster::RingHashLbConfig::XX_HASH) {
        return fail("only hash_function XX_HASH is supported", "ring_hash_lb_config.hash_function");
      }
      if (c.has_minimum_ring_size()) out.ring_hash.minimum_ring_size = c.minimum_ring_size().value();
      if (c.has_maximum_ring_size()) out.ring_hash.maximum_ring_size = c.maximum_ring_size().value();
      // Envoy's bounds: at most 8M entries either way.
      constexpr uint64_t kMaxRing = 8 * 1024 * 1024;
      if (out.ring_hash.minimum_ring_size == 0 || out.ring_hash.minimum_ring_size > kMaxRing) {
        return fail("must be in [1, 8388608]", "ring_hash_lb_config.minimum_ring_size");
      }
      if (out.ring_hash.maximum_ring_size == 0 || out.ring_hash.maximum_ring_size > kMaxRing) {
        return fail("must be in [1, 8388608]", "ring_hash_lb_config.maximum_ring_size");
      }
      if (out.ring_hash.minimum_ring_size > out.ring_hash.maximum_ring_size) {
        return fail("minimum_ring_size must not exceed maximum_ring_size", "ring_hash_lb_config");
      }
      break;
    }
    case cluster::Cluster::kMaglevLbConfig: {
      if (out.lb_policy != config::LbPolicy::Maglev) return fail("maglev_lb_config needs lb_policy MAGLEV", "maglev_lb_config");
      if (proto.maglev_lb_config().has_table_size()) {
        uint64_t size = proto.maglev_lb_config().table_size().value();
        bool prime = size >= 2 && size <= 5000011;
        for (uint64_t d = 2; prime && d * d <= size; ++d) prime = size % d != 0;
        if (!prime) return fail("must be a prime number at most 5000011", "maglev_lb_config.table_size");
        out.maglev_table_size = size;
      }
      break;
    }
    case cluster::Cluster::kRoundRobinLbConfig: {
      if (out.lb_policy != config::LbPolicy::RoundRobin) {
        return fail("round_robin_lb_config needs lb_policy ROUND_ROBIN", "round_robin_lb_config");
      }
      if (proto.round_robin_lb_config().has_slow_start_config()) {
        auto slow = translateSlowStart(proto.round_robin_lb_config().slow_start_config(),
                                       "round_robin_lb_config.slow_start_config");
        if (!slow) return std::unexpected(slow.error());
        out.slow_start = *slow;
      }
      break;
    }
    case cluster::Cluster::kLeastRequestLbConfig: {
      if (out.lb_policy != config::LbPolicy::LeastRequest) {
        return fail("least_request_lb_config needs lb_policy LEAST_REQUEST", "least_request_lb_config");
      }
      const auto& c = proto.least_request_lb_config();
      if (c.has_choice_count()) {
        if (c.choice_count().value() < 2) return fail("must be at least 2", "least_request_lb_config.choice_count");
        out.least_request.choice_count = c.choice_count().value();
      }
      if (c.has_active_request_bias()) {
        if (!c.active_request_bias().runtime_key().empty()) {
          return fail("runtime keys are not supported", "least_request_lb_config.active_request_bias.runtime_key");
        }
        double bias = c.active_request_bias().default_value();
        if (!(bias >= 0) || bias > 1e6) return fail("must be non-negative", "least_request_lb_config.active_request_bias");
        out.least_request.active_request_bias = bias;
      }
      if (c.has_slow_start_config()) {
        auto slow = translateSlowStart(c.slow_start_config(), "least_request_lb_config.slow_start_config");
        if (!slow) return std::unexpected(slow.error());
        out.slow_start = *slow;
      }
      break;
    }
    case cluster::Cluster::LB_CONFIG_NOT_SET:
      break;
  }
  if (proto.has_common_lb_config() && proto.common_lb_config().has_healthy_panic_threshold()) {
    double v = proto.common_lb_config().healthy_panic_threshold().value();
    if (!(v >= 0 && v <= 100)) return fail("must be in [0, 100]", "common_lb_config.healthy_panic_threshold");
    out.healthy_panic_threshold = static_cast<uint32_t>(v);
  }
  if (proto.has_common_lb_config() && proto.common_lb_config().has_locality_weighted_lb_config()) {
    // Every lb_policy (RING_HASH and MAGLEV fold the weights into their ring or table) and
    // every cluster type that has endpoints (ORIGINAL_DST clusters never get here).
    out.locality_weighted = true;
  }
  return {};
}

// Envoy's circuit_breakers: thresholds per routing priority (a route's `priority` picks
// DEFAULT or HIGH); each has Envoy's defaults until set.
Result<void> translateCircuitBreakers(const cluster::CircuitBreakers& proto, config::Cluster& out) {
  if (proto.per_host_thresholds_size() > 0) return fail("per_host_thresholds are not supported", "per_host_thresholds[0]");
  std::set<int> priorities;
  for (int i = 0; i < proto.thresholds_size(); ++i) {
    const auto& t = proto.thresholds(i);
    auto where = "thresholds[" + std::to_string(i) + "]";
    if (t.priority() != envoy::config::core::v3::DEFAULT && t.priority() != envoy::config::core::v3::HIGH) {
      return fail("unknown routing priority", where + ".priority");
    }
    if (!priorities.insert(t.priority()).second) return fail("duplicate priority", where + ".priority");
    if (t.track_remaining()) return fail("track_remaining is not supported", where + ".track_remaining");
    if (t.has_max_connection_pools()) return fail("max_connection_pools is not supported", where + ".max_connection_pools");
    std::optional<config::RetryLimits::Budget> budget;
    if (t.has_retry_budget()) {
      budget.emplace();
      const auto& b = t.retry_budget();
      if (b.has_budget_percent()) {
        double percent = b.budget_percent().value();
        if (!(percent >= 0.0 && percent <= 100.0)) {
          return fail("must be in [0, 100]", where + ".retry_budget.budget_percent");
        }
        budget->budget_percent = percent;
      }
      if (b.has_min_retry_concurrency()) budget->min_retry_concurrency = b.min_retry_concurrency().value();
    }
    bool high = t.priority() == envoy::config::core::v3::HIGH;
    auto& breakers = high ? out.high_circuit_breakers : out.circuit_breakers;
    auto& retry_limits = high ? out.high_retry_limits : out.retry_limits;
    if (t.has_max_connections()) breakers.max_connections = t.max_connections().value();
    if (t.has_max_pending_requests()) breakers.max_pending_requests = t.max_pending_requests().value();
    if (t.has_max_requests()) breakers.max_requests = t.max_requests().value();
    if (t.has_max_retries()) retry_limits.max_retries = t.max_retries().value();
    retry_limits.budget = budget;
  }
  return {};
}

Result<void> translateOutlierDetection(const cluster::OutlierDetection& proto, config::OutlierDetection& out) {
  auto u32 = [](const google::protobuf::UInt32Value& v, uint32_t& field) { field = v.value(); };
  if (proto.has_interval()) {
    auto t = positiveMillis(proto.interval(), "interval");
    if (!t) return std::unexpected(t.error());
    out.interval = *t;
  }
  if (proto.has_base_ejection_time()) {
    auto t = positiveMillis(proto.base_ejection_time(), "base_ejection_time");
    if (!t) return std::unexpected(t.error());
    out.base_ejection_time = *t;
  }
  if (proto.has_max_ejection_time()) {
    auto t = positiveMillis(proto.max_ejection_time(), "max_ejection_time");
    if (!t) return std::unexpected(t.error());
    out.max_ejection_time = *t;
  }
  struct Percent {
    bool set;
    const google::protobuf::UInt32Value& value;
    uint32_t& field;
    const char* name;
  };
  for (const auto& p : std::initializer_list<Percent>{
           {proto.has_max_ejection_percent(), proto.max_ejection_percent(), out.max_ejection_percent, "max_ejection_percent"},
           {proto.has_enforcing_consecutive_5xx(), proto.enforcing_consecutive_5xx(), out.enforcing_consecutive_5xx,
            "enforcing_consecutive_5xx"},
           {proto.has_enforcing_consecutive_gateway_failure(), proto.enforcing_consecutive_gateway_failure(),
            out.enforcing_consecutive_gateway_failure, "enforcing_consecutive_gateway_failure"},
           {proto.has_enforcing_consecutive_local_origin_failure(), proto.enforcing_consecutive_local_origin_failure(),
            out.enforcing_consecutive_local_origin_failure, "enforcing_consecutive_local_origin_failure"},
           {proto.has_enforcing_success_rate(), proto.enforcing_success_rate(), out.enforcing_success_rate,
            "enforcing_success_rate"},
           {proto.has_enforcing_failure_percentage(), proto.enforcing_failure_percentage(),
            out.enforcing_failure_percentage, "enforcing_failure_percentage"},
           {proto.has_failure_percentage_threshold(), proto.failure_percentage_threshold(),
            out.failure_percentage_threshold, "failure_percentage_threshold"},
       }) {
    if (p.set) {
      if (auto r = percentField(p.value, p.field, p.name); !r) return r;
    }
  }
  if (proto.has_consecutive_5xx()) u32(proto.consecutive_5xx(), out.consecutive_5xx);
  if (proto.has_consecutive_gateway_failure()) u32(proto.consecutive_gateway_failure(), out.consecutive_gateway_failure);
  if (proto.has_consecutive_local_origin_failure()) {
    u32(proto.consecutive_local_origin_failure(), out.consecutive_local_origin_failure);
  }
  out.split_external_local_origin_errors = proto.split_external_local_origin_errors();
  if (proto.has_success_rate_minimum_hosts()) u32(proto.success_rate_minimum_hosts(), out.success_rate_minimum_hosts);
  if (proto.has_success_rate_request_volume()) u32(proto.success_rate_request_volume(), out.success_rate_request_volume);
  if (proto.has_success_rate_stdev_factor()) u32(proto.success_rate_stdev_factor(), out.success_rate_stdev_factor);
  if (proto.has_failure_percentage_minimum_hosts()) {
    u32(proto.failure_percentage_minimum_hosts(), out.failure_percentage_minimum_hosts);
  }
  if (proto.has_failure_percentage_request_volume()) {
    u32(proto.failure_percentage_request_volume(), out.failure_percentage_request_volume);
  }
  return {};
}

Result<config::HealthCheck> translateHealthCheck(const envoy::config::core::v3::HealthCheck& proto) {
  namespace core = envoy::config::core::v3;
  config::HealthCheck out;
  // Envoy requires these four.
  if (!proto.has_timeout()) return fail("a timeout is required", "timeout");
  if (!proto.has_interval()) return fail("an interval is required", "interval");
  if (!proto.has_unhealthy_threshold()) return fail("unhealthy_threshold is required", "unhealthy_threshold");
  if (!proto.has_healthy_threshold()) return fail("healthy_threshold is required", "healthy_threshold");
  auto timeout = positiveMillis(proto.timeout(), "timeout");
  if (!timeout) return std::unexpected(timeout.error());
  out.timeout = *timeout;
  auto interval = positiveMillis(proto.interval(), "interval");
  if (!interval) return std::unexpected(interval.error());
  out.interval = *interval;
  if (proto.has_interval_jitter()) {
    const auto& j = proto.interval_jitter();
    if (j.seconds() < 0 || j.nanos() < 0 || j.seconds() > std::numeric_limits<int32_t>::max()) {
      return fail("must be non-negative", "interval_jitter");
    }
    out.interval_jitter = std::chrono::milliseconds(j.seconds() * 1000 + j.nanos() / 1'000'000);
  }
  out.unhealthy_threshold = std::max<uint32_t>(1, proto.unhealthy_threshold().value());
  out.healthy_threshold = std::max<uint32_t>(1, proto.healthy_threshold().value());
  switch (proto.health_checker_case()) {
    case core::HealthCheck::kHttpHealthCheck: {
      const auto& http = proto.http_health_check();
      out.kind = config::HealthCheck::Kind::Http;
      if (http.path().empty() || http.path().front() != '/') {
        return fail("a path starting with '/' is required", "http_health_check.path");
      }
      auto bad_char = [](const std::string& v) {
        return std::any_of(v.begin(), v.end(), [](unsigned char c) { return c <= ' ' || c == 0x7f; });
      };
      if (bad_char(http.path())) return fail("must not contain spaces or control characters", "http_health_check.path");
      if (bad_char(http.host())) return fail("must not contain spaces or control characters", "http_health_check.host");
      out.path = http.path();
      out.host = http.host();
      if (http.expected_statuses_size() > 0) out.expected_statuses.clear();
      for (int i = 0; i < http.expected_statuses_size(); ++i) {
        const auto& r = http.expected_statuses(i);
        // Envoy's bounds: [100, 600), start < end.
        if (r.start() < 100 || r.end() > 600 || r.start() >= r.end()) {
          return fail("must be a range within [100, 600) with start < end",
                      "http_health_check.expected_statuses[" + std::to_string(i) + "]");
        }
        out.expected_statuses.emplace_back(static_cast<uint32_t>(r.start()), static_cast<uint32_t>(r.end()));
      }
      break;
    }
    case core::HealthCheck::kTcpHealthCheck:
      out.kind = config::HealthCheck::Kind::Tcp;
      if (proto.tcp_health_check().has_send() || proto.tcp_health_check().receive_size() > 0) {
        return fail("TCP checks with a payload are not supported (connect only)", "tcp_health_check");
      }
      break;
    case core::HealthCheck::HEALTH_CHECKER_NOT_SET:
      return fail("one of http_health_check or tcp_health_check is required (gRPC and custom checks are not "
                  "supported)");
  }
  return out;
}

Result<void> translateClusterExtensions(const cluster::Cluster& proto, config::Cluster& out) {
  std::set<std::string> keys;
  for (const auto& [key, value] : proto.typed_extension_protocol_options()) keys.insert(key);  // sorted: stable messages
  for (const auto& key : keys) {
    if (key == kHttpProtocolOptionsName) continue;  // the upstream HTTP version: translate.cc
    auto where = "typed_extension_protocol_options[\"" + key + "\"]";
    if (key != kClusterExtensionsKey) {
      return fail("extension protocol options are not supported (only " + std::string(kClusterExtensionsKey) + " and " +
                      std::string(kHttpProtocolOptionsName) + " are)",
                  where);
    }
    const auto& any = proto.typed_extension_protocol_options().at(key);
    if (messageNameOf(any.type_url()) != kClusterExtensionsKey) {
      return fail("expected a " + std::string(kClusterExtensionsKey) + ", got " + any.type_url(), where);
    }
    culvert::v1::ClusterExtensions ext;
    if (!any.UnpackTo(&ext)) return fail("cannot decode culvert.v1.ClusterExtensions", where);
    if (auto u = rejectUnknownFields(ext); !u) return std::unexpected(nest(where, u.error()));
    if (ext.has_latency_ejection()) {
      const auto& le = ext.latency_ejection();
      auto lwhere = where + ".latency_ejection";
      if (!out.outlier_detection) return fail("latency_ejection needs the cluster's outlier_detection", lwhere);
      if (!(le.multiple() > 1) || le.multiple() > 1e6) return fail("multiple must be greater than 1", lwhere + ".multiple");
      if (le.ewma_alpha() != 0 && !(le.ewma_alpha() > 0 && le.ewma_alpha() <= 1)) {
        return fail("must be in (0, 1]", lwhere + ".ewma_alpha");
      }
      auto& od = *out.outlier_detection;
      od.latency_ejection_multiple = le.multiple();
      if (le.minimum_hosts() != 0) od.latency_ejection_minimum_hosts = le.minimum_hosts();
      if (le.request_volume() != 0) od.latency_ejection_request_volume = le.request_volume();
      if (le.ewma_alpha() != 0) od.latency_ewma_alpha = le.ewma_alpha();
    }
  }
  return {};
}

}  // namespace

Result<void> translateUpstreamPolicies(const cluster::Cluster& proto, config::Cluster& out) {
  if (out.type != config::ClusterType::OriginalDst) {
    if (auto r = translateLbConfig(proto, out); !r) return r;
  } else if (proto.lb_config_case() != cluster::Cluster::LB_CONFIG_NOT_SET) {
    return fail("an ORIGINAL_DST cluster takes no load balancer config", "lb_config");
  }
  if (proto.has_circuit_breakers()) {
    if (auto r = translateCircuitBreakers(proto.circuit_breakers(), out); !r) {
      return std::unexpected(nest("circuit_breakers", r.error()));
    }
  }
  if (proto.has_outlier_detection()) {
    if (out.type == config::ClusterType::OriginalDst) {
      return fail("outlier_detection is not supported on ORIGINAL_DST clusters", "outlier_detection");
    }
    config::OutlierDetection od;
    if (auto r = translateOutlierDetection(proto.outlier_detection(), od); !r) {
      return std::unexpected(nest("outlier_detection", r.error()));
    }
    out.outlier_detection = od;
  }
  if (proto.health_checks_size() > 1) return fail("only one health check per cluster is supported", "health_checks[1]");
  if (proto.health_checks_size() == 1) {
    if (out.type == config::ClusterType::OriginalDst) {
      return fail("health_checks are not supported on ORIGINAL_DST clusters", "health_checks[0]");
    }
    auto hc = translateHealthCheck(proto.health_checks(0));
    if (!hc) return std::unexpected(nest("health_checks[0]", hc.error()));
    out.health_check = std::move(*hc);
  }
  return translateClusterExtensions(proto, out);
}

Result<std::vector<config::HashPolicy>> translateHashPolicies(const route::RouteAction& proto) {
  std::vector<config::HashPolicy> out;
  for (int i = 0; i < proto.hash_policy_size(); ++i) {
    const auto& p = proto.hash_policy(i);
    auto where = "hash_policy[" + std::to_string(i) + "]";
    config::HashPolicy policy;
    policy.terminal = p.terminal();
    switch (p.policy_specifier_case()) {
      case route::RouteAction::HashPolicy::kHeader: {
        if (p.header().header_name().empty()) return fail("a header_name is required", where + ".header.header_name");
        policy.kind = config::HashPolicy::Kind::Header;
        policy.name = p.header().header_name();
        common::lowerAsciiInPlace(policy.name);
        break;
      }
      case route::RouteAction::HashPolicy::kCookie:
        if (p.cookie().name().empty()) return fail("a cookie name is required", where + ".cookie.name");
        if (p.cookie().has_ttl()) {
          return fail("cookie ttl (generated cookies) is not supported; name only", where + ".cookie.ttl");
        }
        if (!p.cookie().path().empty()) return fail("cookie path is not supported", where + ".cookie.path");
        policy.kind = config::HashPolicy::Kind::Cookie;
        policy.name = p.cookie().name();
        break;
      case route::RouteAction::HashPolicy::kConnectionProperties:
        if (!p.connection_properties().source_ip()) {
          return fail("connection_properties needs source_ip: true", where + ".connection_properties.source_ip");
        }
        policy.kind = config::HashPolicy::Kind::SourceIp;
        break;
      case route::RouteAction::HashPolicy::POLICY_SPECIFIER_NOT_SET:
        return fail("one of header, cookie or connection_properties is required (query_parameter and filter_state "
                    "are not supported)",
                    where);
    }
    out.push_back(std::move(policy));
  }
  return out;
}

}  // namespace culvert::xds::translate
