#pragma once

#include <string_view>

#include "proxy/config/snapshot.h"
#include "proxy/http/header_map.h"

namespace culvert::router {

// envoy.type.matcher.v3.StringMatcher against one value.
bool matchesString(const config::StringMatcher& matcher, std::string_view value);

// One envoy.config.route.v3.HeaderMatcher against a header map (a repeated header is
// matched as its values joined by ','), invert_match applied.
bool matchesHeader(const config::HeaderMatcher& matcher, const http::HeaderMap& headers);

// Envoy's virtual host selection: exact domain, then the longest "*.suffix", then the
// longest "prefix.*", then "*". The port is ignored unless a domain names it.
const config::VirtualHost* selectVirtualHost(const config::RouteConfiguration& routes, std::string_view authority);

// The first route of `vhost` whose match accepts the request (Envoy's first-match rule).
// A CONNECT request (`connect`) is matched by connect_matcher routes only, on headers;
// every other request by path routes only.
const config::Route* selectRoute(const config::VirtualHost& vhost, std::string_view path, const http::HeaderMap& headers,
                                 bool connect = false);

// Both steps; null when nothing matches (the caller answers 404).
const config::Route* matchRoute(const config::RouteConfiguration& routes, std::string_view authority,
                                std::string_view path, const http::HeaderMap& headers);

}  // namespace culvert::router
