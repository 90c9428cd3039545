#pragma once

#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/accesslog/response_flags.h"
#include "proxy/common/socket_address.h"
#include "proxy/config/snapshot.h"
#include "proxy/http/header_map.h"
#include "proxy/router/router.h"
#include "proxy/upstream/cluster_manager.h"

namespace culvert::server {

// The step between the codec-independent router (proxy/router/router.h) and a session,
// shared by the HTTP/1.1 and HTTP/2 sessions: route a request head to a cluster and an
// endpoint of this worker, and shape the head the upstream sees.

struct UpstreamTarget {
  std::shared_ptr<const config::Cluster> cluster;
  common::SocketAddress endpoint;
};

// What the proxy answers itself instead (no route, direct response, no endpoint).
struct LocalReply {
  int status = 503;
  std::string body;
  // For the access log: Envoy's response flag, if any, and the reason.
  std::optional<accesslog::ResponseFlag> flag;
  std::string details;
};

// `decision` is filled in whatever the outcome, so a local reply still gets the route's
// response header mutations and stats. `random` feeds weighted cluster picks.
std::expected<UpstreamTarget, LocalReply> routeToUpstream(
    upstream::ClusterManager& clusters, const config::RouteConfiguration& routes, const http::RequestHead& request,
    const std::optional<common::SocketAddress>& original_destination, uint64_t random,
    router::RouteDecision& decision);

// Drops hop-by-hop headers, then applies the router's upstream request shaping (rewrites,
// header mutations, x-forwarded-for with the pod's IP, x-request-id, x-forwarded-proto).
void prepareUpstreamRequest(http::RequestHead& request, const config::RouteConfiguration& routes,
                            const router::RouteDecision& decision, std::string_view client_ip);

// Per-thread randomness for weighted cluster picks.
uint64_t routeRandom();

}  // namespace culvert::server
