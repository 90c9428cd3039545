#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "proxy/config/snapshot.h"
#include "proxy/http/header_map.h"

namespace culvert::router {

// Envoy's route hash_policy: each policy that finds its input (header value, cookie
// value, source IP) contributes xxHash64 of it, combined as hash = rotl(hash, 1) ^ new;
// a `terminal` policy that produced a hash stops the walk. No input at all: no hash (the
// balancer then picks at random, as Envoy's does). `source_ip` is the pod's enrolled IP.
std::optional<uint64_t> hashRequest(const std::vector<config::HashPolicy>& policies, const http::HeaderMap& headers,
                                    std::string_view source_ip);

// The value of cookie `name` in the request's Cookie headers.
std::optional<std::string_view> findCookie(const http::HeaderMap& headers, std::string_view name);

}  // namespace culvert::router
