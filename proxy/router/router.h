#pragma once

// The codec-independent half of Envoy's HTTP connection manager and router filter: which
// route a request takes, and what the upstream request and the downstream response look
// like after the route's rewrites and header mutations. HTTP/1.1 and HTTP/2 sessions
// both call these; none of them touches a socket.

#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/config/snapshot.h"
#include "proxy/http/header_map.h"

namespace culvert::router {

// What routing decided for one request.
struct RouteDecision {
  const config::VirtualHost* virtual_host = nullptr;
  const config::Route* route = nullptr;  // null: no route (the caller answers 404)
  // For weighted_clusters: the cluster this request was given.
  const config::ClusterWeight* weighted_cluster = nullptr;

  // The upstream cluster's name; empty for direct responses and unrouted requests.
  std::string_view cluster() const;
};

// Envoy's weighted pick: `random` modulo the total weight, walked through the clusters
// in order. Pure: the caller injects the randomness.
const config::ClusterWeight& pickWeightedCluster(const config::WeightedClusters& weighted, uint64_t random);

// Virtual host, route and (for weighted clusters) cluster for `request`.
RouteDecision decideRoute(const config::RouteConfiguration& routes, const http::RequestHead& request,
                          uint64_t random);

// The downstream facts the upstream request carries.
struct DownstreamFacts {
  // The pod's enrolled IP (never the loopback address capture makes it come from).
  std::string_view remote_ip;
  std::string_view scheme = "http";
};

// Turns the downstream request into the upstream one, in Envoy's order: x-forwarded-for
// appended with the pod IP, x-request-id generated when absent (kept when present),
// x-forwarded-proto; then the header mutations of the weighted cluster, route, virtual
// host and route configuration (so the least specific level wins on conflicts, as Envoy's
// default most_specific_header_mutations_wins: false); then host and path rewrites.
void prepareUpstreamRequest(const config::RouteConfiguration& routes, const RouteDecision& decision,
                            const DownstreamFacts& downstream, http::RequestHead& request);

// The response header mutations, same order as the request's. `decision.route` may be a
// direct response.
void prepareDownstreamResponse(const config::RouteConfiguration& routes, const RouteDecision& decision,
                               http::HeaderMap& headers);

// One level's removals, then its additions (Envoy's HeaderParser::evaluateHeaders).
void applyHeaderMutations(const std::vector<config::HeaderValueOption>& to_add,
                          const std::vector<std::string>& to_remove, http::HeaderMap& headers);

// Envoy with proxy_100_continue off (its default, and culvert's only mode): the proxy
// answers `Expect: 100-continue` itself and the upstream never sees it. Removes the
// header and says whether the codec should send its 100 (Continue) now.
bool takeExpectContinue(http::HeaderMap& headers);

// A random RFC 4122 version 4 UUID, as Envoy's x-request-id.
std::string generateRequestId();

}  // namespace culvert::router
