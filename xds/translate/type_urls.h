#pragma once

#include <string_view>

namespace culvert::xds::translate {

inline constexpr std::string_view kListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener";
inline constexpr std::string_view kRouteConfigurationType =
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
inline constexpr std::string_view kClusterType = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
inline constexpr std::string_view kClusterLoadAssignmentType =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
inline constexpr std::string_view kTenantType = "type.googleapis.com/culvert.v1.Tenant";

inline constexpr std::string_view kHttpConnectionManagerName = "envoy.filters.network.http_connection_manager";
inline constexpr std::string_view kHttpConnectionManagerMessage =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
inline constexpr std::string_view kTcpProxyName = "envoy.filters.network.tcp_proxy";
inline constexpr std::string_view kTcpProxyMessage = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
inline constexpr std::string_view kRouterName = "envoy.filters.http.router";
inline constexpr std::string_view kRouterMessage = "envoy.extensions.filters.http.router.v3.Router";
inline constexpr std::string_view kHttpProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

// "type.googleapis.com/a.b.C" -> "a.b.C" (any prefix up to the last '/' is ignored, as
// protobuf does).
constexpr std::string_view messageNameOf(std::string_view type_url) {
  auto slash = type_url.rfind('/');
  return slash == std::string_view::npos ? type_url : type_url.substr(slash + 1);
}

}  // namespace culvert::xds::translate
