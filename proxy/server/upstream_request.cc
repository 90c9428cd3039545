#include "proxy/server/upstream_request.h"

#include <random>

#include "proxy/http/http1/encoder.h"

namespace culvert::server {

std::expected<UpstreamTarget, LocalReply> routeToUpstream(
    upstream::ClusterManager& clusters, const config::RouteConfiguration& routes, const http::RequestHead& request,
    const std::optional<common::SocketAddress>& original_destination, uint64_t random,
    router::RouteDecision& decision) {
  decision = router::decideRoute(routes, request, random);
  const auto* route = decision.route;
  using Flag = accesslog::ResponseFlag;
  if (route == nullptr) return std::unexpected(LocalReply{404, "no route\n", Flag::NoRouteFound, "route_not_found"});
  if (route->direct_response) {
    return std::unexpected(LocalReply{static_cast<int>(route->direct_response->status),
                                      route->direct_response->body, std::nullopt, "direct_response"});
  }
  auto selection = clusters.pickEndpoint(decision.cluster());
  if (!selection) {
    switch (selection.error()) {
      case upstream::ClusterManager::PickError::NoCluster:
        return std::unexpected(LocalReply{503, "no cluster\n", Flag::NoClusterFound, "cluster_not_found"});
      case upstream::ClusterManager::PickError::Overflow:
        return std::unexpected(LocalReply{503, "upstream overflow\n", Flag::UpstreamOverflow, "upstream_overflow"});
      case upstream::ClusterManager::PickError::NoHealthyEndpoint:
        break;
    }
    return std::unexpected(LocalReply{503, "no healthy upstream\n", Flag::NoHealthyUpstream, "no_healthy_upstream"});
  }
  UpstreamTarget target{selection->cluster, selection->endpoint.address};
  if (selection->original_destination) {
    if (!original_destination) {
      return std::unexpected(LocalReply{503, "no original destination for an ORIGINAL_DST cluster\n",
                                        Flag::NoHealthyUpstream, "no_original_destination"});
    }
    target.endpoint = *original_destination;
  }
  return target;
}

void prepareUpstreamRequest(http::RequestHead& request, const config::RouteConfiguration& routes,
                            const router::RouteDecision& decision, std::string_view client_ip) {
  http::http1::removeHopByHopHeaders(request.headers);
  router::prepareUpstreamRequest(routes, decision, {.remote_ip = client_ip}, request);
}

uint64_t routeRandom() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

}  // namespace culvert::server
