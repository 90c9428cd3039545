#include "proxy/router/router.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <random>

#include "proxy/common/ascii.h"
#include "proxy/router/route_matcher.h"

namespace culvert::router {

namespace {

std::string_view pathOnly(std::string_view path) {
  auto q = path.find('?');
  return q == std::string_view::npos ? path : path.substr(0, q);
}

void rewritePath(const config::Route& route, const config::RouteAction& action, std::string& path) {
  auto q = path.find('?');
  std::string query = q == std::string::npos ? std::string{} : path.substr(q);
  std::string_view p = pathOnly(path);
  if (action.prefix_rewrite && route.match.prefix) {
    path = *action.prefix_rewrite + std::string(p.substr(std::min(p.size(), route.match.prefix->size()))) + query;
  } else if (action.regex_rewrite) {
    // Envoy: the pattern applies to the path only; the query string is kept as it was.
    path = action.regex_rewrite->pattern->replaceAll(p, action.regex_rewrite->substitution) + query;
  }
}

}  // namespace

std::string_view RouteDecision::cluster() const {
  if (weighted_cluster) return weighted_cluster->name;
  if (route && route->route) return route->route->cluster;
  return {};
}

const config::ClusterWeight& pickWeightedCluster(const config::WeightedClusters& weighted, uint64_t random) {
  uint64_t point = random % weighted.total_weight;
  uint64_t end = 0;
  for (const auto& cluster : weighted.clusters) {
    end += cluster.weight;
    if (point < end) return cluster;
  }
  return weighted.clusters.back();  // unreachable while total_weight is the sum (translate)
}

RouteDecision decideRoute(const config::RouteConfiguration& routes, const http::RequestHead& request,
                          uint64_t random) {
  RouteDecision out;
  out.virtual_host = selectVirtualHost(routes, request.authority());
  if (!out.virtual_host) return out;
  out.route = selectRoute(*out.virtual_host, request.path, request.headers, request.method == "CONNECT");
  if (out.route && out.route->route && out.route->route->weighted_clusters) {
    out.weighted_cluster = &pickWeightedCluster(*out.route->route->weighted_clusters, random);
  }
  return out;
}

void applyHeaderMutations(const std::vector<config::HeaderValueOption>& to_add,
                          const std::vector<std::string>& to_remove, http::HeaderMap& headers) {
  using Action = config::HeaderValueOption::Action;
  for (const auto& name : to_remove) headers.remove(name);
  for (const auto& option : to_add) {
    if (option.value.empty() && !option.keep_empty_value) continue;
    bool present = headers.get(option.name).has_value();
    switch (option.action) {
      case Action::AppendIfExistsOrAdd:
        headers.add(option.name, option.value);
        break;
      case Action::AddIfAbsent:
        if (!present) headers.add(option.name, option.value);
        break;
      case Action::OverwriteIfExistsOrAdd:
        headers.set(option.name, option.value);
        break;
      case Action::OverwriteIfExists:
        if (present) headers.set(option.name, option.value);
        break;
    }
  }
}

void prepareUpstreamRequest(const config::RouteConfiguration& routes, const RouteDecision& decision,
                            const DownstreamFacts& downstream, http::RequestHead& request) {
  auto& headers = request.headers;
  // The HTTP connection manager's part.
  if (auto xff = headers.get("x-forwarded-for")) {
    headers.set("x-forwarded-for", std::string(*xff) + ", " + std::string(downstream.remote_ip));
  } else {
    headers.add("x-forwarded-for", std::string(downstream.remote_ip));
  }
  if (!headers.get("x-request-id")) headers.add("x-request-id", generateRequestId());
  if (!headers.get("x-forwarded-proto")) headers.add("x-forwarded-proto", std::string(downstream.scheme));

  // The router's part: most specific level first, so the least specific one wins.
  if (decision.weighted_cluster) {
    const auto& m = decision.weighted_cluster->headers;
    applyHeaderMutations(m.request_headers_to_add, m.request_headers_to_remove, headers);
  }
  for (const auto* m : {&decision.route->headers, &decision.virtual_host->headers, &routes.headers}) {
    applyHeaderMutations(m->request_headers_to_add, m->request_headers_to_remove, headers);
  }
  if (!decision.route->route) return;
  const auto& action = *decision.route->route;
  if (action.host_rewrite_literal) headers.set("host", *action.host_rewrite_literal);
  rewritePath(*decision.route, action, request.path);
}

void prepareDownstreamResponse(const config::RouteConfiguration& routes, const RouteDecision& decision,
                               http::HeaderMap& headers) {
  if (!decision.route) return;
  if (decision.weighted_cluster) {
    const auto& m = decision.weighted_cluster->headers;
    applyHeaderMutations(m.response_headers_to_add, m.response_headers_to_remove, headers);
  }
  for (const auto* m : {&decision.route->headers, &decision.virtual_host->headers, &routes.headers}) {
    applyHeaderMutations(m->response_headers_to_add, m->response_headers_to_remove, headers);
  }
}

bool takeExpectContinue(http::HeaderMap& headers) {
  auto expect = headers.get("expect");
  if (!expect) return false;
  constexpr std::string_view kContinue = "100-continue";
  bool is_continue = common::equalsIgnoreCaseAscii(*expect, kContinue);
  if (is_continue) headers.remove("expect");
  return is_continue;
}

std::string generateRequestId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  uint64_t a = rng();
  uint64_t b = rng();
  // RFC 4122 version 4 layout.
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  // 8-4-4-4-12 hex digits, by hand (snprintf was 1 % of a proxied request's CPU), a byte's
  // two digits at a time from a table.
  static constexpr auto kHexPairs = [] {
    constexpr char kHex[] = "0123456789abcdef";
    std::array<char, 512> pairs{};
    for (size_t byte = 0; byte < 256; ++byte) {
      pairs[2 * byte] = kHex[byte >> 4];
      pairs[2 * byte + 1] = kHex[byte & 0xf];
    }
    return pairs;
  }();
  std::string id(36, '-');
  size_t at = 0;
  auto put = [&](uint64_t value, size_t bytes) {
    for (size_t i = bytes; i-- > 0; value >>= 8) std::memcpy(&id[at + 2 * i], &kHexPairs[2 * (value & 0xff)], 2);
    at += 2 * bytes + 1;  // past the dash
  };
  put(a >> 32, 4);
  put((a >> 16) & 0xffff, 2);
  put(a & 0xffff, 2);
  put(b >> 48, 2);
  put(b & 0xffffffffffffULL, 6);
  return id;
}

}  // namespace culvert::router
