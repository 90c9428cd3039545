#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "proxy/accesslog/response_flags.h"
#include "proxy/common/socket_address.h"
#include "proxy/http/header_map.h"

namespace culvert::accesslog {

// What one request (or TCP connection) did, recorded by its session as it happens and
// read by the formatters when it ends. Sessions only set fields here; every log decision
// (which logger, which filter, which format) is made from this record.
struct StreamInfo {
  using SteadyTime = std::chrono::steady_clock::time_point;

  std::chrono::system_clock::time_point start_time{};
  SteadyTime start{};
  std::optional<SteadyTime> last_downstream_rx;   // the request's end (%REQUEST_DURATION%)
  std::optional<SteadyTime> first_upstream_rx;    // the response head (%RESPONSE_DURATION%)
  std::optional<SteadyTime> end;                  // %DURATION%

  // HTTP only; the session keeps these alive until the record is logged. The request is
  // the one sent upstream (x-request-id, x-forwarded-for added).
  const http::RequestHead* request = nullptr;
  http::HeaderMap response_headers;
  http::HeaderMap response_trailers;

  std::string protocol;                 // "HTTP/1.1", "HTTP/2"; empty for TCP ("-")
  uint32_t response_code = 0;           // 0: no response (Envoy prints 0)
  ResponseFlags flags;
  std::string response_code_details;    // Envoy's snake_case reason, e.g. "via_upstream"
  uint64_t bytes_received = 0;          // request body (HTTP) or bytes from downstream (TCP)
  uint64_t bytes_sent = 0;              // response body (HTTP) or bytes to downstream (TCP)

  std::string route_name;
  std::string upstream_cluster;
  // The last attempt's endpoint, "ip:port" in a log line. Kept as an address and
  // formatted when a record is written, so a request nobody logs never formats it.
  std::optional<common::SocketAddress> upstream_host;
  std::string upstream_transport_failure_reason;
  uint32_t attempt_count = 0;

  std::string downstream_remote_address;  // the pod's enrolled IP with the client port
  std::string downstream_local_address;   // the original destination of a captured connection
  std::string tenant;
  std::string pod_namespace;
  std::string pod_name;
  std::string pod_ip;

  void begin(SteadyTime now) {
    start = now;
    start_time = std::chrono::system_clock::now();
  }
  // A local reply or an upstream failure: the flag and Envoy's reason text.
  void fail(ResponseFlag flag, std::string details) {
    flags.set(flag);
    response_code_details = std::move(details);
  }
};

}  // namespace culvert::accesslog
