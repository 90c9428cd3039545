#pragma once

#include <optional>
#include <span>
#include <string>

#include "proxy/config/snapshot.h"
#include "proxy/http/header_map.h"

namespace culvert::router {

// The upgrade a request asks for, lower-case: "connect" for a CONNECT request, else the
// Upgrade header's value when Connection lists "upgrade" (an Upgrade header without that
// token is not a request to upgrade, RFC 9110 §7.8). nullopt: a plain request.
std::optional<std::string> requestedUpgrade(const http::RequestHead& request);

// What the connection manager does with an upgrade request.
enum class UpgradeAction {
  Reject,            // not enabled: Envoy answers 403 (upgrade_failed)
  Forward,           // the request goes upstream on a fresh connection; tunnel on 101 (2xx for CONNECT)
  TerminateConnect,  // culvert answers 200 and tunnels raw TCP to the route's cluster
};

// Envoy's rule: the type must be listed in the connection manager's upgrade_configs; its
// `enabled` there is the default, which the route's entry for the type overrides. The
// route's connect_config makes an enabled CONNECT terminate here. `route` may be null
// (no route matched): then the connection manager's setting alone decides.
UpgradeAction decideUpgrade(std::span<const config::UpgradeConfig> connection_manager,
                            const config::RouteAction* route, std::string_view type);

}  // namespace culvert::router
