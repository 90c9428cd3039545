#include "xds/translate/translate.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <set>
#include <string>
#include <string_view>
#include <utility>

#include "xds/proto/envoy/config/cluster/v3/cluster.pb.h"
#include "xds/proto/envoy/config/endpoint/v3/endpoint.pb.h"
#include "xds/proto/envoy/config/listener/v3/listener.pb.h"
#include "xds/proto/envoy/config/route/v3/route.pb.h"
#include "xds/proto/envoy/extensions/filters/http/router/v3/router.pb.h"
#include "xds/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb.h"
#include "xds/proto/envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb.h"
#include "xds/translate/proto_util.h"
#include "xds/translate/type_urls.h"
#include "xds/translate/upstream_policies.h"

namespace culvert::xds::translate {

namespace {

using common::Error;
using common::fail;
using common::nest;
using common::Result;

namespace core = envoy::config::core::v3;
namespace listener = envoy::config::listener::v3;
namespace route = envoy::config::route::v3;
namespace cluster = envoy::config::cluster::v3;
namespace endpoint = envoy::config::endpoint::v3;
namespace hcm = envoy::extensions::filters::network::http_connection_manager::v3;
namespace tcp = envoy::extensions::filters::network::tcp_proxy::v3;
namespace router = envoy::extensions::filters::http::router::v3;

std::string indexed(std::string_view field, int i) {
  return std::string(field) + "[" + std::to_string(i) + "]";
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// Envoy's Duration fields: non-negative, whole milliseconds are all culvert keeps.
Result<std::chrono::milliseconds> toMillis(const google::protobuf::Duration& d, const std::string& where) {
  if (d.seconds() < 0 || d.nanos() < 0 || d.nanos() > 999'999'999) {
    return fail("duration must be non-negative", where);
  }
  constexpr int64_t kMaxSeconds = std::numeric_limits<int64_t>::max() / 1000 - 1;
  if (d.seconds() > kMaxSeconds) return fail("duration is too large", where);
  return std::chrono::milliseconds(d.seconds() * 1000 + d.nanos() / 1'000'000);
}

// An IP:port from an Address; culvert resolves no names on the config path.
Result<common::SocketAddress> translateSocketAddress(const core::Address& address, bool allow_port_zero) {
  if (!address.has_socket_address()) {
    if (address.has_pipe()) return fail("pipe addresses are not supported", "pipe");
    if (address.has_envoy_internal_address()) {
      return fail("internal addresses are not supported", "envoy_internal_address");
    }
    return fail("a socket_address is required", "socket_address");
  }
  const auto& sa = address.socket_address();
  if (sa.protocol() != core::SocketAddress::TCP) {
    return fail("only TCP is supported", "socket_address.protocol");
  }
  if (!sa.resolver_name().empty()) {
    return fail("custom resolvers are not supported", "socket_address.resolver_name");
  }
  if (sa.ipv4_compat()) return fail("ipv4_compat is not supported", "socket_address.ipv4_compat");
  if (sa.has_named_port()) return fail("named ports are not supported", "socket_address.named_port");
  if (sa.port_value() > 65535) return fail("port must be at most 65535", "socket_address.port_value");
  if (sa.port_value() == 0 && !allow_port_zero) return fail("a port is required", "socket_address.port_value");
  auto parsed = common::SocketAddress::parse(sa.address(), static_cast<uint16_t>(sa.port_value()));
  if (!parsed) {
    return fail(parsed.error().message + " (culvert takes IP literals only)", "socket_address.address");
  }
  return *parsed;
}

// --- Routes ---

Result<config::HeaderMatcher> translateHeaderMatcher(const route::HeaderMatcher& proto) {
  config::HeaderMatcher out;
  if (proto.name().empty()) return fail("a header name is required", "name");
  out.name = lower(proto.name());
  out.invert_match = proto.invert_match();
  switch (proto.header_match_specifier_case()) {
    case route::HeaderMatcher::kExactMatch:
      out.exact_match = proto.exact_match();
      break;
    case route::HeaderMatcher::kPresentMatch:
      // Envoy: present_match: false matches when the header is absent.
      out.present_match = true;
      if (!proto.present_match()) out.invert_match = !out.invert_match;
      break;
    case route::HeaderMatcher::HEADER_MATCH_SPECIFIER_NOT_SET:
      // Envoy: no specifier means "the header is present".
      out.present_match = true;
      break;
  }
  return out;
}

Result<config::RouteMatch> translateRouteMatch(const route::RouteMatch& proto) {
  config::RouteMatch out;
  switch (proto.path_specifier_case()) {
    case route::RouteMatch::kPrefix:
      out.prefix = proto.prefix();
      break;
    case route::RouteMatch::kPath:
      out.path = proto.path();
      break;
    case route::RouteMatch::PATH_SPECIFIER_NOT_SET:
      return fail("one of prefix or path is required (safe_regex and others are not supported)");
  }
  out.case_sensitive = proto.has_case_sensitive() ? proto.case_sensitive().value() : true;
  for (int i = 0; i < proto.headers_size(); ++i) {
    auto h = translateHeaderMatcher(proto.headers(i));
    if (!h) return std::unexpected(nest(indexed("headers", i), h.error()));
    out.headers.push_back(std::move(*h));
  }
  return out;
}

Result<config::RouteAction> translateRouteAction(const route::RouteAction& proto) {
  config::RouteAction out;
  if (proto.cluster_specifier_case() != route::RouteAction::kCluster || proto.cluster().empty()) {
    return fail("a cluster name is required (cluster_header and weighted_clusters are not supported)",
                "cluster");
  }
  out.cluster = proto.cluster();
  if (!proto.prefix_rewrite().empty()) out.prefix_rewrite = proto.prefix_rewrite();
  if (proto.host_rewrite_specifier_case() == route::RouteAction::kHostRewriteLiteral) {
    if (proto.host_rewrite_literal().empty()) {
      return fail("host_rewrite_literal must not be empty", "host_rewrite_literal");
    }
    out.host_rewrite_literal = proto.host_rewrite_literal();
  }
  if (proto.has_timeout()) {
    // 0 disables the timeout, as in Envoy.
    auto t = toMillis(proto.timeout(), "timeout");
    if (!t) return std::unexpected(t.error());
    out.timeout = *t;
  }
  auto hash_policy = translateHashPolicies(proto);
  if (!hash_policy) return std::unexpected(hash_policy.error());
  out.hash_policy = std::move(*hash_policy);
  return out;
}

Result<config::DirectResponse> translateDirectResponse(const route::DirectResponseAction& proto) {
  config::DirectResponse out;
  if (proto.status() < 100 || proto.status() > 599) {
    return fail("status must be in [100, 599]", "status");
  }
  out.status = proto.status();
  if (proto.has_body()) {
    const auto& body = proto.body();
    switch (body.specifier_case()) {
      case core::DataSource::kInlineString:
        out.body = body.inline_string();
        break;
      case core::DataSource::kInlineBytes:
        out.body = body.inline_bytes();
        break;
      case core::DataSource::kFilename:
        return fail("bodies from files are not supported; use inline_string", "body.filename");
      case core::DataSource::kEnvironmentVariable:
        return fail("bodies from environment variables are not supported; use inline_string",
                    "body.environment_variable");
      case core::DataSource::SPECIFIER_NOT_SET:
        break;
    }
  }
  return out;
}

Result<config::Route> translateRoute(const route::Route& proto) {
  config::Route out;
  out.name = proto.name();
  if (!proto.has_match()) return fail("a match is required", "match");
  auto match = translateRouteMatch(proto.match());
  if (!match) return std::unexpected(nest("match", match.error()));
  out.match = std::move(*match);
  switch (proto.action_case()) {
    case route::Route::kRoute: {
      auto action = translateRouteAction(proto.route());
      if (!action) return std::unexpected(nest("route", action.error()));
      out.route = std::move(*action);
      break;
    }
    case route::Route::kDirectResponse: {
      auto direct = translateDirectResponse(proto.direct_response());
      if (!direct) return std::unexpected(nest("direct_response", direct.error()));
      out.direct_response = std::move(*direct);
      break;
    }
    case route::Route::ACTION_NOT_SET:
      return fail("a route needs an action: route or direct_response (redirect and others are not supported)");
  }
  return out;
}

// Envoy's domain rules: "*" alone, or one wildcard as the whole first or last label part.
Result<void> validateDomain(const std::string& domain) {
  if (domain.empty()) return fail("a domain must not be empty");
  if (domain == "*") return {};
  auto stars = std::count(domain.begin(), domain.end(), '*');
  if (stars == 0) return {};
  if (stars == 1 && (domain.front() == '*' || domain.back() == '*')) return {};
  return fail("invalid wildcard domain '" + domain + "': only a leading or trailing '*' is allowed");
}

Result<config::VirtualHost> translateVirtualHost(const route::VirtualHost& proto) {
  config::VirtualHost out;
  if (proto.name().empty()) return fail("a virtual host name is required", "name");
  out.name = proto.name();
  if (proto.require_tls() != route::VirtualHost::NONE) {
    return fail("require_tls is not supported", "require_tls");
  }
  if (proto.domains_size() == 0) return fail("at least one domain is required", "domains");
  for (int i = 0; i < proto.domains_size(); ++i) {
    auto domain = lower(proto.domains(i));
    if (auto v = validateDomain(domain); !v) return std::unexpected(nest(indexed("domains", i), v.error()));
    out.domains.push_back(std::move(domain));
  }
  for (int i = 0; i < proto.routes_size(); ++i) {
    auto r = translateRoute(proto.routes(i));
    if (!r) return std::unexpected(nest(indexed("routes", i), r.error()));
    out.routes.push_back(std::move(*r));
  }
  return out;
}

Result<config::RouteConfiguration> translateRouteConfigurationChecked(const route::RouteConfiguration& proto) {
  config::RouteConfiguration out;
  out.name = proto.name();
  if (proto.has_validate_clusters() && proto.validate_clusters().value()) {
    return fail("validate_clusters: true is not supported", "validate_clusters");
  }
  std::set<std::string> names;
  std::set<std::string> domains;
  for (int i = 0; i < proto.virtual_hosts_size(); ++i) {
    auto where = indexed("virtual_hosts", i);
    auto vh = translateVirtualHost(proto.virtual_hosts(i));
    if (!vh) return std::unexpected(nest(where, vh.error()));
    if (!names.insert(vh->name).second) {
      return fail("duplicate virtual host name '" + vh->name + "'", where + ".name");
    }
    for (size_t d = 0; d < vh->domains.size(); ++d) {
      if (!domains.insert(vh->domains[d]).second) {
        return fail("domain '" + vh->domains[d] + "' appears in more than one virtual host",
                    where + "." + indexed("domains", static_cast<int>(d)));
      }
    }
    out.virtual_hosts.push_back(std::move(*vh));
  }
  return out;
}

// --- Listeners ---

Result<config::FilterChainMatch> translateFilterChainMatch(const listener::FilterChainMatch& proto) {
  config::FilterChainMatch out;
  if (proto.has_destination_port()) {
    uint32_t port = proto.destination_port().value();
    if (port == 0 || port > 65535) return fail("must be in [1, 65535]", "destination_port");
    out.destination_port = static_cast<uint16_t>(port);
  }
  for (int i = 0; i < proto.prefix_ranges_size(); ++i) {
    const auto& range = proto.prefix_ranges(i);
    auto cidr = common::CidrRange::parse(range.address_prefix(),
                                         range.has_prefix_len() ? range.prefix_len().value() : 0);
    if (!cidr) return fail(cidr.error().message, indexed("prefix_ranges", i));
    out.prefix_ranges.push_back(*cidr);
  }
  for (int i = 0; i < proto.server_names_size(); ++i) {
    if (proto.server_names(i).empty()) return fail("must not be empty", indexed("server_names", i));
    out.server_names.push_back(lower(proto.server_names(i)));
  }
  const auto& tp = proto.transport_protocol();
  if (!tp.empty() && tp != "raw_buffer" && tp != "tls") {
    return fail("transport_protocol must be empty, raw_buffer or tls", "transport_protocol");
  }
  out.transport_protocol = tp;
  return out;
}

// One line that two chains with the same match share (Envoy rejects such listeners).
std::string matchKey(const config::FilterChainMatch& m) {
  std::string key = m.destination_port ? std::to_string(*m.destination_port) : "*";
  key += "|" + m.transport_protocol + "|";
  std::vector<std::string> parts;
  for (const auto& r : m.prefix_ranges) parts.push_back(r.prefix.ip() + "/" + std::to_string(r.length));
  std::sort(parts.begin(), parts.end());
  for (const auto& p : parts) key += p + ",";
  key += "|";
  parts = m.server_names;
  std::sort(parts.begin(), parts.end());
  for (const auto& p : parts) key += p + ",";
  return key;
}

Result<void> translateHttpFilters(const hcm::HttpConnectionManager& proto) {
  bool router_seen = false;
  for (int i = 0; i < proto.http_filters_size(); ++i) {
    const auto& filter = proto.http_filters(i);
    auto where = indexed("http_filters", i);
    bool is_router = false;
    if (filter.has_typed_config()) {
      if (messageNameOf(filter.typed_config().type_url()) == kRouterMessage) {
        router::Router config;
        if (!filter.typed_config().UnpackTo(&config)) {
          return fail("cannot decode the Router config", where + ".typed_config");
        }
        if (auto u = rejectUnknownFields(config); !u) {
          return std::unexpected(nest(where + ".typed_config", u.error()));
        }
        is_router = true;
      }
    } else {
      is_router = filter.name() == kRouterName;
    }
    if (!is_router) {
      if (filter.is_optional()) continue;  // Envoy skips an unsupported optional filter too.
      std::string type = filter.has_typed_config() ? filter.typed_config().type_url() : "no typed_config";
      return fail("HTTP filter '" + filter.name() + "' (" + type +
                      ") is not supported; only envoy.filters.http.router is (mark others is_optional to skip them)",
                  where);
    }
    if (filter.disabled()) return fail("the router filter cannot be disabled", where + ".disabled");
    if (router_seen) return fail("more than one router filter", where);
    router_seen = true;
    // Envoy requires the terminal filter last; optional filters after it would be skipped
    // anyway, required ones are an error.
    for (int j = i + 1; j < proto.http_filters_size(); ++j) {
      if (!proto.http_filters(j).is_optional()) {
        return fail("the router must be the last HTTP filter", indexed("http_filters", j));
      }
    }
    break;
  }
  if (!router_seen) return fail("the last HTTP filter must be envoy.filters.http.router", "http_filters");
  return {};
}

Result<config::HttpConnectionManager> translateHcm(const hcm::HttpConnectionManager& proto) {
  if (auto u = rejectUnknownFields(proto); !u) return std::unexpected(u.error());
  config::HttpConnectionManager out;
  if (proto.codec_type() != hcm::HttpConnectionManager::AUTO) {
    return fail("only codec_type AUTO is supported (culvert detects HTTP/1.1 and HTTP/2 itself)",
                "codec_type");
  }
  if (proto.stat_prefix().empty()) return fail("stat_prefix is required", "stat_prefix");
  out.stat_prefix = proto.stat_prefix();
  switch (proto.route_specifier_case()) {
    case hcm::HttpConnectionManager::kRds:
      if (proto.rds().route_config_name().empty()) {
        return fail("route_config_name is required", "rds.route_config_name");
      }
      out.route_config_name = proto.rds().route_config_name();
      break;
    case hcm::HttpConnectionManager::kRouteConfig: {
      auto rc = translateRouteConfigurationChecked(proto.route_config());
      if (!rc) return std::unexpected(nest("route_config", rc.error()));
      out.route_config_name = rc->name;
      out.route_config = std::make_shared<const config::RouteConfiguration>(std::move(*rc));
      break;
    }
    case hcm::HttpConnectionManager::ROUTE_SPECIFIER_NOT_SET:
      return fail("one of rds or route_config is required (scoped_routes is not supported)");
  }
  if (auto f = translateHttpFilters(proto); !f) return std::unexpected(f.error());
  return out;
}

Result<config::TcpProxy> translateTcpProxy(const tcp::TcpProxy& proto) {
  if (auto u = rejectUnknownFields(proto); !u) return std::unexpected(u.error());
  config::TcpProxy out;
  if (proto.stat_prefix().empty()) return fail("stat_prefix is required", "stat_prefix");
  out.stat_prefix = proto.stat_prefix();
  if (proto.cluster().empty()) return fail("a cluster is required", "cluster");
  out.cluster = proto.cluster();
  if (proto.has_idle_timeout()) {
    auto t = toMillis(proto.idle_timeout(), "idle_timeout");
    if (!t) return std::unexpected(t.error());
    out.idle_timeout = *t;
  }
  return out;
}

Result<config::FilterChain> translateFilterChain(const listener::FilterChain& proto) {
  config::FilterChain out;
  out.name = proto.name();
  if (proto.has_transport_socket()) {
    return fail("transport sockets (TLS termination) on filter chains are not supported", "transport_socket");
  }
  auto match = translateFilterChainMatch(proto.filter_chain_match());
  if (!match) return std::unexpected(nest("filter_chain_match", match.error()));
  out.match = std::move(*match);
  if (proto.filters_size() == 0) {
    return fail("a filter chain needs one network filter: " + std::string(kHttpConnectionManagerName) + " or " +
                    std::string(kTcpProxyName),
                "filters");
  }
  if (proto.filters_size() > 1) {
    return fail("only one network filter per chain is supported", "filters[1]");
  }
  const auto& filter = proto.filters(0);
  if (!filter.has_typed_config()) return fail("typed_config is required", "filters[0].typed_config");
  if (messageNameOf(filter.typed_config().type_url()) == kTcpProxyMessage) {
    tcp::TcpProxy config;
    if (!filter.typed_config().UnpackTo(&config)) {
      return fail("cannot decode the TcpProxy config", "filters[0].typed_config");
    }
    auto tcp_proxy = translateTcpProxy(config);
    if (!tcp_proxy) return std::unexpected(nest("filters[0].typed_config", tcp_proxy.error()));
    out.tcp_proxy = std::move(*tcp_proxy);
    return out;
  }
  if (messageNameOf(filter.typed_config().type_url()) != kHttpConnectionManagerMessage) {
    return fail("network filter '" + filter.name() + "' (" + filter.typed_config().type_url() +
                    ") is not supported; only " + std::string(kHttpConnectionManagerName) + " and " +
                    std::string(kTcpProxyName) + " are",
                "filters[0].typed_config");
  }
  hcm::HttpConnectionManager config;
  if (!filter.typed_config().UnpackTo(&config)) {
    return fail("cannot decode the HttpConnectionManager config", "filters[0].typed_config");
  }
  auto http = translateHcm(config);
  if (!http) return std::unexpected(nest("filters[0].typed_config", http.error()));
  out.http = std::move(*http);
  return out;
}

Result<config::Endpoint> translateLbEndpoint(const endpoint::LbEndpoint& proto) {
  if (!proto.has_endpoint()) return fail("an endpoint is required", "endpoint");
  if (!proto.endpoint().has_address()) return fail("an address is required", "endpoint.address");
  auto address = translateSocketAddress(proto.endpoint().address(), /*allow_port_zero=*/false);
  if (!address) return std::unexpected(nest("endpoint.address", address.error()));
  config::Endpoint out;
  out.address = *address;
  if (proto.has_load_balancing_weight()) {
    if (proto.load_balancing_weight().value() == 0) return fail("must be at least 1", "load_balancing_weight");
    out.weight = proto.load_balancing_weight().value();
  }
  return out;
}

}  // namespace

Result<config::Listener> translateListener(const listener::Listener& proto) {
  if (auto u = rejectUnknownFields(proto); !u) return std::unexpected(u.error());
  config::Listener out;
  if (proto.name().empty()) return fail("a listener needs a name", "name");
  out.name = proto.name();
  if (proto.has_use_original_dst() && proto.use_original_dst().value()) {
    return fail("use_original_dst is not supported: culvert's in-pod listener already delivers the original "
                "destination; use virtual listeners (bind_to_port: false) per destination",
                "use_original_dst");
  }
  if (proto.has_transparent() && proto.transparent().value()) {
    return fail("transparent listeners are not supported", "transparent");
  }
  if (proto.has_freebind() && proto.freebind().value()) return fail("freebind is not supported", "freebind");
  if (proto.has_default_filter_chain()) return fail("default_filter_chain is not supported yet", "default_filter_chain");
  out.bind_to_port = proto.has_bind_to_port() ? proto.bind_to_port().value() : true;
  if (!proto.has_address()) return fail("an address is required", "address");
  // A binding listener may ask for an ephemeral port; a capture selector needs a real one.
  auto address = translateSocketAddress(proto.address(), /*allow_port_zero=*/out.bind_to_port);
  if (!address) return std::unexpected(nest("address", address.error()));
  out.address = *address;
  if (proto.filter_chains_size() == 0) return fail("at least one filter chain is required", "filter_chains");
  std::set<std::string> matches;
  for (int i = 0; i < proto.filter_chains_size(); ++i) {
    auto chain = translateFilterChain(proto.filter_chains(i));
    if (!chain) return std::unexpected(nest(indexed("filter_chains", i), chain.error()));
    if (!matches.insert(matchKey(chain->match)).second) {
      return fail("another filter chain has the same filter_chain_match",
                  indexed("filter_chains", i) + ".filter_chain_match");
    }
    out.filter_chains.push_back(std::move(*chain));
  }
  return out;
}

Result<config::RouteConfiguration> translateRouteConfiguration(const route::RouteConfiguration& proto) {
  if (auto u = rejectUnknownFields(proto); !u) return std::unexpected(u.error());
  return translateRouteConfigurationChecked(proto);
}

Result<config::Cluster> translateCluster(const cluster::Cluster& proto) {
  if (auto u = rejectUnknownFields(proto); !u) return std::unexpected(u.error());
  config::Cluster out;
  if (proto.name().empty()) return fail("a cluster needs a name", "name");
  out.name = proto.name();
  switch (proto.type()) {
    case cluster::Cluster::STATIC:
      out.type = config::ClusterType::Static;
      break;
    case cluster::Cluster::EDS:
      out.type = config::ClusterType::Eds;
      out.eds_service_name = proto.eds_cluster_config().service_name().empty()
                                 ? proto.name()
                                 : proto.eds_cluster_config().service_name();
      break;
    case cluster::Cluster::ORIGINAL_DST:
      out.type = config::ClusterType::OriginalDst;
      // Envoy's rule: the cluster itself provides the host (the connection's original
      // destination), so no other load balancer applies.
      if (proto.lb_policy() != cluster::Cluster::CLUSTER_PROVIDED) {
        return fail("an ORIGINAL_DST cluster needs lb_policy CLUSTER_PROVIDED", "lb_policy");
      }
      if (proto.has_load_assignment()) {
        return fail("an ORIGINAL_DST cluster takes no load_assignment", "load_assignment");
      }
      break;
    default:
      return fail("cluster type " + cluster::Cluster::DiscoveryType_Name(proto.type()) +
                      " is not supported; only STATIC, EDS and ORIGINAL_DST are",
                  "type");
  }
  if (auto policies = translateUpstreamPolicies(proto, out); !policies) return std::unexpected(policies.error());
  if (proto.has_connect_timeout()) {
    auto t = toMillis(proto.connect_timeout(), "connect_timeout");
    if (!t) return std::unexpected(t.error());
    if (t->count() <= 0) return fail("must be at least 1ms", "connect_timeout");
    out.connect_timeout = *t;
  }
  if (proto.has_transport_socket()) {
    return fail("upstream transport sockets (TLS) are not supported", "transport_socket");
  }
  // Envoy ignores load_assignment on EDS clusters; so does culvert.
  if (out.type == config::ClusterType::Static && proto.has_load_assignment()) {
    auto endpoints = translateClusterLoadAssignment(proto.load_assignment());
    if (!endpoints) return std::unexpected(nest("load_assignment", endpoints.error()));
    out.endpoints = std::move(*endpoints);
  }
  return out;
}

Result<std::vector<config::Endpoint>> translateClusterLoadAssignment(const endpoint::ClusterLoadAssignment& proto) {
  if (auto u = rejectUnknownFields(proto); !u) return std::unexpected(u.error());
  std::vector<config::Endpoint> out;
  size_t total = 0;
  for (const auto& locality : proto.endpoints()) total += static_cast<size_t>(locality.lb_endpoints_size());
  out.reserve(total);
  // Envoy's rule: priorities run from 0 without gaps.
  std::set<uint32_t> priorities;
  for (const auto& locality : proto.endpoints()) priorities.insert(locality.priority());
  if (!priorities.empty() && *priorities.rbegin() + 1 != priorities.size()) {
    return fail("priorities must run from 0 without gaps", "endpoints");
  }
  for (int i = 0; i < proto.endpoints_size(); ++i) {
    const auto& locality = proto.endpoints(i);
    auto where = indexed("endpoints", i);
    for (int j = 0; j < locality.lb_endpoints_size(); ++j) {
      const auto& lb = locality.lb_endpoints(j);
      // Built only for an error: no allocation per endpoint on the success path.
      auto lb_where = [&] { return where + "." + indexed("lb_endpoints", j); };
      switch (lb.health_status()) {
        case core::UNHEALTHY:
        case core::DRAINING:
        case core::TIMEOUT:
          continue;
        case core::DEGRADED:
          return fail("DEGRADED endpoints are not supported", lb_where() + ".health_status");
        default:
          break;
      }
      auto ep = translateLbEndpoint(lb);
      if (!ep) return std::unexpected(nest(lb_where(), ep.error()));
      ep->priority = locality.priority();
      out.push_back(*ep);
    }
  }
  return out;
}

}  // namespace culvert::xds::translate
