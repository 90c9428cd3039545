#pragma once

#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/common/socket_address.h"
#include "proxy/config/snapshot.h"
#include "proxy/http/header_map.h"
#include "proxy/upstream/cluster_manager.h"

namespace culvert::server {

// The codec-independent half of forwarding a request, shared by the HTTP/1.1 and HTTP/2
// sessions: route a request head to a cluster and endpoint, and shape the head the
// upstream sees.

struct UpstreamTarget {
  const config::Route* route = nullptr;  // with a RouteAction
  std::shared_ptr<const config::Cluster> cluster;
  common::SocketAddress endpoint;
};

// What the proxy answers itself instead (no route, direct response, no endpoint).
struct LocalReply {
  int status = 503;
  std::string body;
};

std::expected<UpstreamTarget, LocalReply> routeToUpstream(
    upstream::ClusterManager& clusters, const config::RouteConfiguration& routes, const http::RequestHead& request,
    const std::optional<common::SocketAddress>& original_destination);

// Drops hop-by-hop headers, applies the route's rewrites, appends the client's address to
// x-forwarded-for and adds x-request-id / x-forwarded-proto when absent.
void prepareUpstreamRequest(http::RequestHead& request, const config::Route& route, std::string_view client_ip);

}  // namespace culvert::server
