#include "proxy/server/upstream_request.h"

#include <random>

#include "proxy/http/http1/encoder.h"

namespace culvert::server {

void prepareUpstreamRequest(http::RequestHead& request, const config::RouteConfiguration& routes,
                            const router::RouteDecision& decision, std::string_view client_ip) {
  http::http1::removeHopByHopHeaders(request.headers);
  router::prepareUpstreamRequest(routes, decision, {.remote_ip = client_ip}, request);
}

uint64_t routeRandom() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

}  // namespace culvert::server
