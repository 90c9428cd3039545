#include "proxy/server/upstream_request.h"

#include <random>

#include "proxy/http/http1/encoder.h"

namespace culvert::server {

void prepareUpstreamRequest(http::RequestHead& request, const config::RouteConfiguration& routes,
                            const router::RouteDecision& decision, std::string_view client_ip) {
  http::http1::removeHopByHopHeaders(request.headers);
  router::prepareUpstreamRequest(routes, decision, {.remote_ip = client_ip}, request);
}

bool isGrpcRequest(const http::RequestHead& request) {
  return request.headers.get("content-type").value_or("").starts_with("application/grpc");
}

http::ResponseHead grpcDeadlineExceededHead() {
  http::ResponseHead head;
  head.status = 200;
  head.headers.add("content-type", "application/grpc");
  head.headers.add("grpc-status", "4");
  head.headers.add("grpc-message", "upstream request timeout");
  return head;
}

std::string_view recordStreamTimeout(StreamTimeout kind, const tenant::TenantContext& tenant,
                                     accesslog::StreamInfo& log) {
  using Flag = accesslog::ResponseFlag;
  switch (kind) {
    case StreamTimeout::Headers:
      tenant.downstream_rq_headers_timeout->inc();
      log.response_code_details = "request_header_timeout";
      return "request header timeout\n";
    case StreamTimeout::Request:
      tenant.downstream_rq_request_timeout->inc();
      log.response_code_details = "request_overall_timeout";
      return "request timeout\n";
    case StreamTimeout::Idle:
      tenant.downstream_rq_idle_timeout->inc();
      log.fail(Flag::StreamIdleTimeout, "stream_idle_timeout");
      return "stream timeout\n";
    case StreamTimeout::MaxDuration:
      tenant.downstream_rq_max_duration_reached->inc();
      log.fail(Flag::DurationTimeout, "max_duration_timeout");
      return "downstream duration timeout\n";
  }
  return "stream timeout\n";
}

uint64_t routeRandom() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

}  // namespace culvert::server
