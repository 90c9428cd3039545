#pragma once

#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/accesslog/response_flags.h"
#include "proxy/accesslog/stream_info.h"
#include "proxy/common/socket_address.h"
#include "proxy/config/snapshot.h"
#include "proxy/http/header_map.h"
#include "proxy/router/router.h"
#include "proxy/tenant/tenant_context.h"
#include "proxy/upstream/cluster_manager.h"

namespace culvert::server {

// The step between the codec-independent router (proxy/router/router.h) and a session,
// shared by the HTTP/1.1 and HTTP/2 sessions: shape the head the upstream sees, and the
// connection manager's answers that do not depend on the codec.

// Drops hop-by-hop headers, then applies the router's upstream request shaping (rewrites,
// header mutations, x-forwarded-for with the pod's IP, x-request-id, x-forwarded-proto).
void prepareUpstreamRequest(http::RequestHead& request, const config::RouteConfiguration& routes,
                            const router::RouteDecision& decision, std::string_view client_ip);

bool isGrpcRequest(const http::RequestHead& request);
// DEADLINE_EXCEEDED as a trailers-only response (HTTP 200, grpc-status 4): what a gRPC
// client understands of a timeout; Envoy answers the same.
http::ResponseHead grpcDeadlineExceededHead();

// The connection manager's stream timeouts (request_headers_timeout, request_timeout,
// stream idle, max_stream_duration / grpc-timeout).
enum class StreamTimeout { Headers, Request, Idle, MaxDuration };
// Counts an expired stream timeout for the tenant and records it in the access log;
// returns the body of its 408.
std::string_view recordStreamTimeout(StreamTimeout kind, const tenant::TenantContext& tenant,
                                     accesslog::StreamInfo& log);

// Per-thread randomness for weighted cluster picks.
uint64_t routeRandom();

}  // namespace culvert::server
