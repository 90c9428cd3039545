#pragma once

#include <chrono>
#include <optional>
#include <string_view>

#include "proxy/config/snapshot.h"
#include "proxy/http/header_map.h"

namespace culvert::router {

// A grpc-timeout header value (gRPC over HTTP/2: 1-8 digits and a unit H, M, S, m, u
// or n), rounded up to whole milliseconds; nullopt when malformed.
std::optional<std::chrono::milliseconds> parseGrpcTimeout(std::string_view value);

// How long a stream on a route may last (0 = no limit): the request's grpc-timeout when
// grpc_timeout_header_max is present (capped by it unless 0, minus the offset), else
// max_stream_duration. Envoy's rule.
std::chrono::milliseconds streamDurationLimit(const config::MaxStreamDuration& limit,
                                              const http::HeaderMap& request_headers);

}  // namespace culvert::router
