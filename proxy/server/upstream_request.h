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
// shared by the HTTP/1.1 and HTTP/2 sessions: shape the head the upstream sees.

// Drops hop-by-hop headers, then applies the router's upstream request shaping (rewrites,
// header mutations, x-forwarded-for with the pod's IP, x-request-id, x-forwarded-proto).
void prepareUpstreamRequest(http::RequestHead& request, const config::RouteConfiguration& routes,
                            const router::RouteDecision& decision, std::string_view client_ip);

// Per-thread randomness for weighted cluster picks.
uint64_t routeRandom();

}  // namespace culvert::server
