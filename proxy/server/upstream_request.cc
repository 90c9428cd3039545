#include "proxy/server/upstream_request.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "proxy/http/http1/encoder.h"
#include "proxy/router/route_matcher.h"

namespace culvert::server {

namespace {

std::string generateRequestId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  uint64_t a = rng();
  uint64_t b = rng();
  // RFC 4122 version 4 layout.
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  char buf[37];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xffff),
                static_cast<unsigned>(b >> 48), static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

}  // namespace

std::expected<UpstreamTarget, LocalReply> routeToUpstream(
    upstream::ClusterManager& clusters, const config::RouteConfiguration& routes, const http::RequestHead& request,
    const std::optional<common::SocketAddress>& original_destination) {
  const auto* route = router::matchRoute(routes, request.authority(), request.path, request.headers);
  if (route == nullptr) return std::unexpected(LocalReply{404, "no route\n"});
  if (route->direct_response) {
    return std::unexpected(
        LocalReply{static_cast<int>(route->direct_response->status), route->direct_response->body});
  }
  auto selection = clusters.pickEndpoint(route->route->cluster);
  if (!selection) {
    return std::unexpected(LocalReply{503, selection.error() == upstream::ClusterManager::PickError::NoCluster
                                               ? "no cluster\n"
                                               : "no healthy upstream\n"});
  }
  UpstreamTarget target{route, selection->cluster, selection->endpoint.address};
  if (selection->original_destination) {
    if (!original_destination) {
      return std::unexpected(LocalReply{503, "no original destination for an ORIGINAL_DST cluster\n"});
    }
    target.endpoint = *original_destination;
  }
  return target;
}

void prepareUpstreamRequest(http::RequestHead& request, const config::Route& route, std::string_view client_ip) {
  const auto& action = *route.route;
  auto& headers = request.headers;
  http::http1::removeHopByHopHeaders(headers);
  if (action.prefix_rewrite && route.match.prefix) {
    request.path = *action.prefix_rewrite + request.path.substr(std::min(request.path.size(), route.match.prefix->size()));
  }
  if (action.host_rewrite_literal) headers.set("host", *action.host_rewrite_literal);
  if (auto xff = headers.get("x-forwarded-for")) {
    headers.set("x-forwarded-for", std::string(*xff) + ", " + std::string(client_ip));
  } else {
    headers.add("x-forwarded-for", std::string(client_ip));
  }
  if (!headers.get("x-request-id")) headers.add("x-request-id", generateRequestId());
  if (!headers.get("x-forwarded-proto")) headers.add("x-forwarded-proto", "http");
}

}  // namespace culvert::server
